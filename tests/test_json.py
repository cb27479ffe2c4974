"""JSON instead of pickle: tasks stored as plain data, and a site that runs no pickles at all.

Real servers on this run's database. A JSON row names a `@leek.task` function by path and
holds its arguments as JSON: nothing is unpickled, and a path that names anything else is
not run.
"""

import json
import os
from datetime import date

import pytest
from django.db import transaction

from leek import api, serialize
from leek.exceptions import UnpicklableError, UnserializableError
from leek.models import Encoding, Task, TaskStatus
from tests import tasks
from tests.test_signing import Planted

REFUSED = "leek.exceptions.PickleRefused"


def test_a_json_task_runs_on_a_server_and_returns_json(start_server):
    start_server()
    handle = tasks.json_describe.offload("report", (1, 2, 3), options={"fast": True})
    row = Task.objects.get(pk=handle.id)
    assert row.encoding == Encoding.JSON
    # Plain JSON text in the table, readable by anyone, with nothing to unpickle.
    stored = json.loads(bytes(row.payload))
    assert stored == {"args": ["report", [1, 2, 3]], "kwargs": {"options": {"fast": True}}}
    handle.wait(60)
    assert handle.status == TaskStatus.SUCCESSFUL, handle.traceback
    value = handle.return_value
    assert (value["name"], value["total"], value["options"]) == ("report", 6, {"fast": True})
    assert value["pid"] != os.getpid()
    assert json.loads(bytes(handle.task.result)) == value


@pytest.mark.parametrize(
    ("args", "kwargs", "named"),
    [
        (("x", [date(2026, 1, 1)]), {}, "argument 1"),
        (("x", [1]), {"options": {1: "a"}}, "argument 'options'"),
        (("x", [float("nan")]), {}, "argument 1"),
    ],
)
def test_an_argument_that_is_not_json_is_named_and_nothing_is_saved(args, kwargs, named):
    with pytest.raises(UnserializableError, match=named) as caught:
        tasks.json_describe.offload(*args, **kwargs)
    assert "tests.tasks.json_describe" in str(caught.value)
    assert not Task.objects.exists()


def test_a_site_on_json_stores_every_task_as_json_and_refuses_pickles(settings, start_server):
    settings.LEEK = {**settings.LEEK, "serializer": "json"}
    # An undeclared function cannot be named by path: refused before anything is saved.
    with pytest.raises(UnserializableError, match="declared with @leek.task"):
        api.push_task_to_queue(os.getcwd)
    with pytest.raises(UnpicklableError, match="stores no pickles"):
        tasks.add.using(serializer="pickle").offload(1, 2)
    assert not Task.objects.exists()
    start_server(env={"LEEK_TEST_SERIALIZER": "json"})
    handle = tasks.add.offload(2, 3)
    assert Task.objects.get(pk=handle.id).encoding == Encoding.JSON
    assert handle.wait(60).return_value == 5


def test_a_server_on_json_never_unpickles_a_pickled_row(settings, start_server, tmp_path):
    planted = tmp_path / "planted"
    # A pickled row, validly signed, whose unpickling would make a directory.
    payload = serialize.dumps_call(os.getcwd, (Planted(str(planted)),), {})
    with transaction.atomic():
        saved = api.save(api.TaskOptions(), "tests.tasks.add", [payload], Encoding.PICKLE)
    start_server(env={"LEEK_TEST_SERIALIZER": "json"})
    handle = api.TaskHandle(saved.ids[0], "tests.tasks.add", saved.using).wait(60)
    assert handle.status == TaskStatus.FAILED
    assert handle.task.exception_class_path == REFUSED
    assert "runs no pickles" in handle.traceback
    assert not planted.exists()


def test_a_json_row_naming_an_undeclared_function_is_not_run(start_server, tmp_path):
    made = tmp_path / "made"
    call = serialize.dumps_json({"args": [str(made)], "kwargs": {}})
    with transaction.atomic():
        saved = api.save(api.TaskOptions(), "os.mkdir", [call], Encoding.JSON)
        # The same path, declared: runs.
        declared = tmp_path / "declared"
        call = serialize.dumps_json({"args": [str(declared)], "kwargs": {}})
        ran = api.save(api.TaskOptions(), "tests.tasks.make_directory", [call], Encoding.JSON)
    start_server()
    refused = api.TaskHandle(saved.ids[0], "os.mkdir", saved.using).wait(60)
    assert refused.status == TaskStatus.FAILED
    assert "not a django.tasks Task" in refused.traceback
    assert not made.exists()
    done = api.TaskHandle(ran.ids[0], "tests.tasks.make_directory", ran.using).wait(60)
    assert done.status == TaskStatus.SUCCESSFUL, done.traceback
    assert declared.is_dir()


def test_a_return_value_that_is_not_json_fails_the_task_saying_so(settings):
    settings.LEEK = {**settings.LEEK, "eager": True}
    handle = tasks.make_directory.using(serializer="json").offload("/nonexistent/x/y")
    assert handle.status == TaskStatus.FAILED
    assert "FileNotFoundError" in handle.traceback
    handle = tasks.return_pid.using(serializer="json").offload()
    assert handle.return_value == os.getpid()
    handle = tasks.return_unpicklable.using(serializer="json").offload()
    assert handle.status == TaskStatus.FAILED
    assert "the return value of tests.tasks.return_unpicklable" in handle.traceback
    assert handle.task.exception_class_path == "leek.exceptions.UnserializableError"
