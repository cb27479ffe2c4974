"""A table the test tasks write to, one row per call."""

from django.db import models


class Row(models.Model):
    """One row per call of a row-writing test task."""

    n = models.IntegerField()
    pid = models.IntegerField(default=0)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"row {self.n} by {self.pid}"
