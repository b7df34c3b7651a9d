from django.db import models


class Record(models.Model):
    """A side effect a task leaves in the database, to count runs and check rollbacks."""

    key = models.CharField(max_length=100, db_index=True)


class Note(models.Model):
    """Refers to a Record: a task can leave a dangling reference, which only the commit catches."""

    record = models.ForeignKey(Record, models.CASCADE)
