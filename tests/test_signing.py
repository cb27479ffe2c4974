"""Signed pickles: a task row or a result that was not signed with the site's key is never
unpickled, and keys rotate (issue 13, hostile input)."""

import os
import pickle

import pytest
from django.db import transaction

from leek import serialize, signing
from leek.exceptions import BadSignature
from leek.models import Task, TaskStatus
from tests import tasks
from tests.models import Row

BAD = "leek.exceptions.BadSignature"


class Planted:
    """Unpickling this makes a directory: what a row planted in the table could do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def flipped(stored):
    """Return `stored` with one bit of its pickle changed."""
    at = len(signing.MAGIC) + signing.DIGEST_SIZE + 5
    return stored[:at] + bytes([stored[at] ^ 1]) + stored[at + 1 :]


def test_a_signed_pickle_round_trips_and_a_changed_one_does_not(settings):
    stored = serialize.dumps_call(tasks.add, (1, 2), {})
    assert stored.startswith(signing.MAGIC)
    fn, args, kwargs = serialize.loads_call(stored, "tests.tasks.add")
    assert (fn(*args, **kwargs), args) == (3, (1, 2))
    for bad in (flipped(stored), stored[len(signing.MAGIC) + 32 :], b"", signing.MAGIC):
        with pytest.raises(BadSignature, match="the call to tests.tasks.add"):
            serialize.loads_call(bad, "tests.tasks.add")


def test_keys_rotate_through_the_fallbacks(settings):
    settings.LEEK = {**settings.LEEK, "signing_key": "old-key"}
    stored = serialize.dumps_value({"n": 1}, "tests.tasks.add")
    settings.LEEK = {**settings.LEEK, "signing_key": "new-key"}
    with pytest.raises(BadSignature, match="does not verify"):
        serialize.loads_value(stored)
    settings.LEEK = {**settings.LEEK, "signing_key_fallbacks": ["old-key"]}
    assert serialize.loads_value(stored) == {"n": 1}
    # Without a signing_key of its own, leek signs with SECRET_KEY and its fallbacks.
    settings.LEEK = {k: v for k, v in settings.LEEK.items() if not k.startswith("signing")}
    settings.SECRET_KEY = "another-secret"
    with pytest.raises(BadSignature):
        serialize.loads_value(stored)
    settings.SECRET_KEY_FALLBACKS = ["old-key"]
    assert serialize.loads_value(stored) == {"n": 1}


def test_a_planted_row_is_failed_and_never_unpickled(start_server, tmp_path):
    server = start_server(workers=1)
    marker = tmp_path / "planted"
    # Written straight into the table, as anyone with write access to it could, before
    # the server hears of the rows (it is told when the transaction commits).
    with transaction.atomic():
        planted = tasks.write_row.offload(7)
        Task.objects.filter(pk=planted.id).update(
            payload=pickle.dumps((Planted(str(marker)), (), {}))
        )
        changed = tasks.write_row.offload(8)
        stored = bytes(Task.objects.get(pk=changed.id).payload)
        Task.objects.filter(pk=changed.id).update(payload=flipped(stored))
    for handle in (planted, changed):
        handle.wait(60)
        assert handle.status == TaskStatus.FAILED
        assert handle.task.exception_class_path == BAD
        assert "was not unpickled" in handle.error
    assert "is not signed" in planted.error
    assert not marker.exists()
    assert not Row.objects.exists()
    assert tasks.add.offload(1, 1).wait(60).return_value == 2
    assert "BadSignature" in server.log()


def test_a_server_with_a_new_key_runs_tasks_signed_with_the_old_one_it_lists(
    start_server, settings
):
    env = {"LEEK_TEST_SIGNING_KEY": "new-key", "LEEK_TEST_SIGNING_FALLBACKS": "old-key"}
    start_server(workers=1, env=env)
    settings.LEEK = {**settings.LEEK, "signing_key": "old-key"}
    old = tasks.add.offload(2, 3)
    settings.LEEK = {**settings.LEEK, "signing_key": "other-key"}
    unknown = tasks.add.offload(2, 3)
    assert old.wait(60).status == TaskStatus.SUCCESSFUL
    # Its result is signed with the server's new key, which this process must know.
    settings.LEEK = {**settings.LEEK, "signing_key": "new-key"}
    assert old.return_value == 5
    assert unknown.wait(60).status == TaskStatus.FAILED
    assert unknown.task.exception_class_path == BAD


def test_a_result_changed_in_the_table_is_not_unpickled(settings, tmp_path):
    settings.LEEK = {**settings.LEEK, "eager": True}
    handle = tasks.add.offload(1, 2)
    marker = tmp_path / "planted"
    Task.objects.filter(pk=handle.id).update(result=pickle.dumps(Planted(str(marker))))
    with pytest.raises(BadSignature, match=f"the return value of task {handle.id}"):
        handle.refresh().return_value  # noqa: B018 - reading it is the test
    assert not marker.exists()


def test_a_signed_result_cannot_pass_for_a_call():
    # Both are signed with the site's key, each for its own purpose.
    value = serialize.dumps_value((tasks.add, (1, 2), {}), "tests.tasks.add")
    with pytest.raises(BadSignature, match="does not verify"):
        serialize.loads_call(value, "tests.tasks.add")
