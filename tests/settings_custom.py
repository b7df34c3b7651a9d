"""The test settings with a task model of the project's own: CQ_TASK_MODEL = customtask.OwnedTask."""

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.customtask"]
CQ_TASK_MODEL = "customtask.OwnedTask"
