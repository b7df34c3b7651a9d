"""A project's own task model (CQ_TASK_MODEL), with typed columns: run by `make test`
with tests.settings_custom."""

from django.conf import settings
from django.db import models

from cq.models import AbstractTask


class OwnedTask(AbstractTask):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True,
                              related_name="cq_tasks")
    organisation = models.CharField(max_length=100, blank=True)
