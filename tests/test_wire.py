"""Unit tests of leek.wire: the line protocol, as pure functions."""

import json

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from leek import wire
from leek.exceptions import LeekError, WireError

# --- parsing the messages -------------------------------------------------------------------


def test_parse_task_line():
    message = wire.parse(b"task default 0 1 22 333")
    assert message == wire.Notify("default", 0, (1, 22, 333))
    assert isinstance(message.priority, int)
    assert all(isinstance(i, int) for i in message.ids)


def test_parse_task_line_with_its_newline_and_a_priority():
    assert wire.parse(b"task emails 7 42\n") == wire.Notify("emails", 7, (42,))
    assert wire.parse(b"task emails -3 42\r\n") == wire.Notify("emails", -3, (42,))


def test_parse_auth():
    assert wire.parse(b"auth 0a1b") == wire.Auth("0a1b")
    assert wire.parse(b"auth 0a1b\n") == wire.Auth("0a1b")


def test_parse_ping_and_stats():
    assert wire.parse(b"ping") == wire.Ping()
    assert wire.parse(b"ping\n") == wire.Ping()
    assert wire.parse(b"stats") == wire.Stats()
    assert wire.parse(wire.PING) == wire.Ping()
    assert wire.parse(wire.STATS) == wire.Stats()


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"\n",
        b"hello",
        b"PING",
        b"ping please",
        b"stats now",
        b"auth",
        b"auth ",
        b"pong",
        b"\x00\x01\x02",
        b"task",
        b"task default",
        b"task default 0",
        b"task default x 1",
        b"task default 0 abc",
        b"task default 0 1 two 3",
        b"task default 0 -1",
        # Past a 64-bit id the database drivers raise errors of their own (issue 13).
        b"task default 0 9999999999999999999",
        "task default 0 \u0663".encode(),  # a digit, but not an ASCII one
        b"task default 0 +1",
        b"task default 0 1.5",
        b"task default 0 0x10",
        b"task default 0 \xc2\xb2",  # a superscript two: isdigit() but not an int
        b"task default 0 " + b"9" * 5000,  # past Python's int-from-string limit
    ],
)
def test_garbage_raises_wire_error(line):
    with pytest.raises(WireError):
        wire.parse(line)


def test_non_utf8_raises_wire_error():
    with pytest.raises(WireError, match="UTF-8"):
        wire.parse(b"task default 0 \xff\xfe")
    with pytest.raises(WireError, match="UTF-8"):
        wire.parse(b"\x80ping")


def test_bad_id_error_names_the_id():
    with pytest.raises(WireError, match="abc"):
        wire.parse(b"task default 0 1 abc")


def test_missing_fields_error_says_what_is_needed():
    with pytest.raises(WireError, match="pool"):
        wire.parse(b"task default 0")


def test_wire_error_is_a_leek_error_and_a_value_error():
    with pytest.raises(WireError) as caught:
        wire.parse(b"nonsense")
    assert isinstance(caught.value, LeekError)
    assert isinstance(caught.value, ValueError)


# --- formatting notifications ---------------------------------------------------------------


def test_format_notify_one_line():
    lines = list(wire.format_notify("default", 0, [5, 6, 7]))
    assert lines == [b"task default 0 5 6 7\n"]


def test_format_notify_no_ids_no_lines():
    assert list(wire.format_notify("default", 0, [])) == []


@pytest.mark.parametrize(
    ("count", "expected_lines"),
    [
        (1, 1),
        (wire.IDS_PER_LINE - 1, 1),
        (wire.IDS_PER_LINE, 1),
        (wire.IDS_PER_LINE + 1, 2),
        (2 * wire.IDS_PER_LINE, 2),
        (2 * wire.IDS_PER_LINE + 5, 3),
    ],
)
def test_format_notify_chunks_and_round_trips(count, expected_lines):
    ids = list(range(10**12, 10**12 + count))  # long ids, as a big table has
    lines = list(wire.format_notify("emails", 3, ids))
    assert len(lines) == expected_lines
    got = []
    for line in lines:
        assert line.endswith(b"\n")
        assert line.count(b"\n") == 1
        assert len(line) <= wire.MAX_LINE
        message = wire.parse(line.rstrip(b"\n"))
        assert isinstance(message, wire.Notify)
        assert message.pool == "emails"
        assert message.priority == 3
        assert len(message.ids) <= wire.IDS_PER_LINE
        got.extend(message.ids)
    assert got == ids


def test_format_notify_accepts_a_generator():
    lines = list(wire.format_notify("default", 1, (i for i in range(1, 4))))
    assert [wire.parse(line) for line in lines] == [wire.Notify("default", 1, (1, 2, 3))]


def test_format_auth_answers_the_challenge_without_the_secret():
    nonce = wire.new_nonce()
    line = wire.format_auth("s3cret", nonce)
    assert line.endswith(b"\n")
    assert b"s3cret" not in line
    message = wire.parse(line)
    assert wire.check_proof("s3cret", nonce, message.proof)
    assert not wire.check_proof("wrong", nonce, message.proof)
    # A proof answers its own nonce only: replayed on another connection it fails.
    assert not wire.check_proof("s3cret", wire.new_nonce(), message.proof)


def test_nonces_are_fresh_and_hello_round_trips():
    nonces = {wire.new_nonce() for _ in range(100)}
    assert len(nonces) == 100
    nonce = nonces.pop()
    assert wire.parse_hello(wire.format_hello(nonce)) == nonce
    for line in (b"", b"pong\n", b"hello\n", b"error bad\n"):
        with pytest.raises(WireError):
            wire.parse_hello(line)


# --- stats and errors -----------------------------------------------------------------------


def test_stats_round_trip():
    stats = {
        "workers": [{"pid": 12, "state": "idle", "task": None, "rss_mb": 31.5}],
        "counts": {"done": 3, "failed": 1},
        "queued": 0,
        "ready": 7,
    }
    line = wire.format_stats(stats)
    assert line.startswith(b"stats ")
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert wire.parse_stats(line.strip()) == stats
    assert wire.parse_stats(line) == stats


class _Odd:
    def __str__(self):
        return "odd"


def test_stats_of_odd_values_are_text():
    line = wire.format_stats({"when": _Odd()})
    assert wire.parse_stats(line.strip()) == {"when": "odd"}


def test_parse_stats_rejects_other_replies():
    with pytest.raises(WireError):
        wire.parse_stats(b"pong")
    with pytest.raises(WireError):
        wire.parse_stats(b"error bad")


def test_format_error():
    line = wire.format_error("not UTF-8")
    assert line == b"error not UTF-8\n"


def test_stats_body_is_json():
    line = wire.format_stats({"a": [1, 2]})
    assert json.loads(line[len(b"stats ") :]) == {"a": [1, 2]}


# --- property -------------------------------------------------------------------------------

MESSAGES = (wire.Auth, wire.Notify, wire.Ping, wire.Stats)


def _check_any_bytes(data):
    try:
        message = wire.parse(data)
    except WireError:
        return
    assert isinstance(message, MESSAGES)
    if isinstance(message, wire.Notify):
        assert message.ids
        assert all(isinstance(i, int) and i >= 0 for i in message.ids)


@hypothesis_settings(database=None, deadline=None, max_examples=400)
@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_wire_error(data):
    _check_any_bytes(data)


@hypothesis_settings(database=None, deadline=None, max_examples=400)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(["task", "auth", "ping", "stats", "default", "0", "-1", "7"]),
            st.text(max_size=12),
            st.integers().map(str),
        ),
        max_size=8,
    ),
    st.sampled_from([" ", "  ", "\t"]),
)
def test_word_salad_parses_or_raises_wire_error(words, sep):
    _check_any_bytes(sep.join(words).encode("utf-8", "surrogatepass"))
