"""The heartbeat thread (leek.server.Heartbeat) in this process, on the real database."""

import logging

from django.db import OperationalError

from leek.models import Server
from leek.server import Heartbeat
from tests.conftest import wait_until

WORKER = {"pid": 1234, "state": "busy", "task": 7, "callable": "tests.tasks.add"}


def test_the_row_follows_the_reports_comes_back_if_deleted_and_is_marked_at_stop():
    beat = Heartbeat("127.0.0.1:8002", ["emails"], interval=0.5)
    beat.report({"workers": [], "counts": {"done": 0}, "restarts": {}})
    beat.start()
    try:
        row = wait_until(lambda: Server.objects.first(), 10, "the row")
        assert (row.address, row.pools, row.stopped_at) == ("127.0.0.1:8002", ["emails"], None)
        beat.report({"workers": [WORKER], "counts": {"done": 3}, "restarts": {}}, urgent=True)
        wait_until(lambda: Server.objects.get().workers == [WORKER], 5, "the new workers")
        Server.objects.all().delete()
        again = wait_until(lambda: Server.objects.first(), 10, "the row again")
        assert again.started_at == row.started_at
        assert again.counts == {"done": 3}
    finally:
        beat.stop()
    row = Server.objects.get()
    assert row.stopped_at is not None
    assert row.workers == []


def test_a_refused_write_is_logged_and_left_for_the_next_round(caplog):
    beat = Heartbeat("", [], interval=1)

    def refused():
        raise OperationalError("the database is down")

    with caplog.at_level(logging.WARNING, logger="leek"):
        beat._attempt("the server's heartbeat", refused)
    assert "cannot write the server's heartbeat, trying again: the database is down" in (
        caplog.text
    )
    beat._attempt("the server's heartbeat", beat._beat)
    assert Server.objects.count() == 1
    beat.stop()
