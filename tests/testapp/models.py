from django.db import models


class Record(models.Model):
    """A side effect a task leaves in the database, to count runs and check rollbacks."""

    key = models.CharField(max_length=100, db_index=True)
