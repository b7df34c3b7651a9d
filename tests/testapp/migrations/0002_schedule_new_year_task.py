"""A data migration that schedules a repeating task, as a project's own would."""

from django.db import migrations

from cq.models import schedule_task


def schedule(apps, schema_editor):
    RepeatingTask = apps.get_model("cq", "RepeatingTask")
    schedule_task(RepeatingTask, "0 0 1 1 *", "tests.testapp.tasks.named", args=["new year"],
                  timezone="Europe/Paris", coalesce=False)


def unschedule(apps, schema_editor):
    apps.get_model("cq", "RepeatingTask").objects.filter(func_name="tests.testapp.tasks.named").delete()


class Migration(migrations.Migration):
    dependencies = [("testapp", "0001_initial"), ("cq", "0001_initial")]
    operations = [migrations.RunPython(schedule, unschedule)]
