"""Reading a stored call or value as Python text, without unpickling it."""

import datetime
import decimal
import pickle

import pytest

from leek import calls
from tests import tasks


@pytest.mark.parametrize("protocol", [4, pickle.HIGHEST_PROTOCOL])
def test_a_call_reads_as_python(protocol):
    payload = pickle.dumps(
        (tasks.add, (1, [2, 3], (4,), {5}, b"b", None, True, 1.5), {"to": "a@b.c"}), protocol
    )
    text = calls.call_text("tests.tasks.add", payload)
    assert text == "tests.tasks.add(1, [2, 3], (4,), {5}, b'b', None, True, 1.5, to='a@b.c')"


def test_objects_show_how_they_are_built_and_nothing_is_imported():
    payload = pickle.dumps(
        (tasks.add, (decimal.Decimal("1.5"),), {"when": datetime.date(2026, 1, 2)})
    )
    text = calls.call_text("tests.tasks.add", payload)
    assert text.startswith("tests.tasks.add(decimal.Decimal('1.5'), when=datetime.date(")


def test_a_pickle_naming_a_module_that_does_not_exist_still_reads():
    # What pickle.loads would fail on (or worse, run): a global from a module nobody has.
    payload = (
        b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x0bno_such_mod\x8c\x02fn\x93)}\x87."
    )
    assert calls.call_text("no_such_mod.fn", payload) == "no_such_mod.fn()"


def test_json_payloads_read_as_calls():
    assert calls.call_text("a.b", b'{"args": [1], "kwargs": {"k": "v"}}') == "a.b(1, k='v')"
    assert calls.call_text("a.b", b"[[1, 2], {}]") == "a.b(1, 2)"
    # A shape it does not know is shown as it is, not as a call without arguments.
    assert "{'task': 'x'}" in calls.call_text("a.b", b'{"task": "x"}')


@pytest.mark.parametrize("payload", [b"\x80\x05junk", b"", b"{not json", None])
def test_what_cannot_be_read_says_so(payload):
    assert "cannot be read" in calls.call_text("a.b", payload)


def test_a_return_value_reads_as_python():
    assert calls.value_text(pickle.dumps({"n": [1, 2]})) == "{'n': [1, 2]}"
    assert calls.value_text(None) == "-"
    loop = [1]
    loop.append(loop)
    assert calls.value_text(pickle.dumps(loop)) == "[1, [...]]"


def test_a_json_return_value_reads_as_python_whatever_its_first_byte():
    # A Django Tasks row's result is JSON text: 42, "done", null, as well as {...} and [...].
    assert calls.value_text(b"42", is_json=True) == "42"
    assert calls.value_text(b'"done"', is_json=True) == "'done'"
    assert calls.value_text(b"null", is_json=True) == "None"
    assert calls.value_text(b'{"n": 1}', is_json=True) == "{'n': 1}"
    assert "cannot be read" in calls.value_text(b"42")  # not a pickle
