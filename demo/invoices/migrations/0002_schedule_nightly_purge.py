"""Schedule the nightly purge of old invoice runs: how a project ships a repeating task in a data
migration (cq.models.schedule_task works on the historical model)."""

from django.db import migrations

from cq.models import schedule_task

PURGE = "invoices.tasks.purge_old_archives"


def schedule(apps, schema_editor):
    schedule_task(apps.get_model("cq", "RepeatingTask"), "15 3 * * *", PURGE, kwargs={"days": 30})


def unschedule(apps, schema_editor):
    apps.get_model("cq", "RepeatingTask").objects.filter(func_name=PURGE).delete()


class Migration(migrations.Migration):
    dependencies = [("invoices", "0001_initial"), ("cq", "0001_initial")]
    operations = [migrations.RunPython(schedule, unschedule)]
