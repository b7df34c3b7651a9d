"""Schedule the nightly purge: how a project ships a repeating task in a data migration."""

from django.db import migrations

from cq.models import schedule_task


def schedule(apps, schema_editor):
    RepeatingTask = apps.get_model("cq", "RepeatingTask")
    schedule_task(RepeatingTask, "15 3 * * *", "primes.tasks.purge_old_reports", kwargs={"days": 7})


def unschedule(apps, schema_editor):
    apps.get_model("cq", "RepeatingTask").objects.filter(func_name="primes.tasks.purge_old_reports").delete()


class Migration(migrations.Migration):
    dependencies = [("cq", "0001_initial")]
    operations = [migrations.RunPython(schedule, unschedule)]
