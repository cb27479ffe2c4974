"""leek.conf (the LEEK setting) and leek.checks (the system checks)."""

import contextlib
import sqlite3

import pytest
from django.core import checks as django_checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from leek import checks, conf

# --- conf.from_mapping ----------------------------------------------------------------------


def test_defaults():
    settings = conf.from_mapping({})
    assert settings.bind == "localhost:8002"
    assert settings.host == "localhost"
    assert settings.port == 8002
    assert settings.workers == 1
    assert settings.eager is False
    assert settings.secret == ""
    assert settings.pools == ()
    assert settings.bind_address == ("localhost", 8002)
    assert settings.bind_is_loopback


def test_values_are_taken():
    settings = conf.from_mapping(
        {"bind": "0.0.0.0:9000", "port": 9001, "workers": 4, "pools": ["a", "b"], "secret": "x"}
    )
    assert settings.bind_address == ("0.0.0.0", 9000)
    assert not settings.bind_is_loopback
    assert settings.port == 9001
    assert settings.workers == 4
    assert settings.pools == ("a", "b")


@pytest.mark.parametrize(
    ("bind", "loopback"),
    [
        ("127.0.0.1:1", True),
        ("127.5.0.1:1", True),
        ("localhost:1", True),
        ("[::1]:8002", True),
        ("0.0.0.0:8002", False),
        ("[::]:8002", False),
        ("192.168.1.2:8002", False),
        ("example.com:8002", False),
    ],
)
def test_bind_is_loopback(bind, loopback):
    assert conf.from_mapping({"bind": bind}).bind_is_loopback is loopback


def test_unknown_key_is_named():
    with pytest.raises(ImproperlyConfigured, match="'wrokers'"):
        conf.from_mapping({"wrokers": 2})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("port", "8002"),
        ("port", 8002.0),
        ("workers", True),
        ("workers", "2"),
        ("workers", 0),
        ("workers", -1),
        ("port", 0),
        ("port", 70000),
        ("eager", 1),
        ("bind", 8002),
        ("bind", "no-port"),
        ("bind", "host:port"),
        ("sweep_interval", 0),
        ("sweep_interval", "1"),
        ("connect_timeout", -1.0),
        ("pools", "default"),
        ("pools", ["has space"]),
        ("pools", [""]),
        ("task_modules", "myapp.jobs"),
        ("task_modules", ["my app.jobs"]),
        ("task_modules", [3]),
        ("secret", None),
    ],
)
def test_bad_value_names_its_key(key, value):
    with pytest.raises(ImproperlyConfigured, match=f"'{key}'"):
        conf.from_mapping({key: value})


def test_not_a_mapping():
    with pytest.raises(ImproperlyConfigured, match="dict"):
        conf.from_mapping([("port", 1)])


def test_replace_validates():
    settings = conf.from_mapping({})
    assert settings.replace(workers=3).workers == 3
    assert settings.workers == 1
    with pytest.raises(ImproperlyConfigured, match="'workers'"):
        settings.replace(workers=0)


def test_get_follows_override_settings():
    from django.conf import settings

    with override_settings(LEEK={**settings.LEEK, "workers": 7}):
        assert conf.get().workers == 7
    assert conf.get().workers == 1


# --- the system checks ----------------------------------------------------------------------


def leek_ids(messages):
    return sorted(m.id for m in messages if m.id and m.id.startswith("leek."))


def run_leek_checks():
    return leek_ids(django_checks.run_checks())


def test_the_test_settings_pass_the_checks():
    messages = django_checks.run_checks()
    assert leek_ids(messages) == []
    assert [m for m in messages if m.level >= django_checks.ERROR] == []


def test_non_loopback_bind_without_secret_is_e002():
    from django.conf import settings

    with override_settings(LEEK={**settings.LEEK, "bind": "0.0.0.0:8002"}):
        messages = django_checks.run_checks()
        assert leek_ids(messages) == ["leek.E002"]
        (e002,) = [m for m in messages if m.id == "leek.E002"]
        assert "secret" in e002.msg
        assert e002.level == django_checks.ERROR
    with override_settings(LEEK={**settings.LEEK, "bind": "0.0.0.0:8002", "secret": "x" * 32}):
        assert run_leek_checks() == []


def test_bad_leek_setting_is_e001():
    with override_settings(LEEK={"nope": 1}):
        messages = django_checks.run_checks()
        assert leek_ids(messages) == ["leek.E001"]
        assert "'nope'" in next(m.msg for m in messages if m.id == "leek.E001")
    with override_settings(LEEK={"workers": 0}):
        assert run_leek_checks() == ["leek.E001"]
    assert run_leek_checks() == []


GOOD_OPTIONS = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
WAL_INIT = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"


def make_sqlite(path, wal):
    with contextlib.closing(sqlite3.connect(path)) as db:
        if wal:
            assert db.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
        db.execute("CREATE TABLE t (x)")
        db.commit()
    return str(path)


def test_sqlite_without_wal_is_e004(tmp_path):
    name = make_sqlite(tmp_path / "plain.sqlite3", wal=False)
    found = checks._check_sqlite("default", {"NAME": name, "OPTIONS": GOOD_OPTIONS})
    assert [m.id for m in found] == ["leek.E004"]
    assert "WAL" in found[0].msg
    assert "'default'" in found[0].msg


def test_sqlite_file_in_wal_mode_passes(tmp_path):
    name = make_sqlite(tmp_path / "wal.sqlite3", wal=True)
    assert checks._check_sqlite("default", {"NAME": name, "OPTIONS": GOOD_OPTIONS}) == []


def test_sqlite_with_a_wal_init_command_passes(tmp_path):
    name = str(tmp_path / "not-yet-made.sqlite3")
    options = {**GOOD_OPTIONS, "init_command": WAL_INIT}
    assert checks._check_sqlite("default", {"NAME": name, "OPTIONS": options}) == []


def test_sqlite_missing_file_without_wal_init_is_e004(tmp_path):
    name = str(tmp_path / "missing.sqlite3")
    found = checks._check_sqlite("default", {"NAME": name, "OPTIONS": GOOD_OPTIONS})
    assert [m.id for m in found] == ["leek.E004"]


@pytest.mark.parametrize("name", [":memory:", "", "file:memdb1?mode=memory&cache=shared"])
def test_in_memory_sqlite_is_e003(name):
    found = checks._check_sqlite("other", {"NAME": name, "OPTIONS": GOOD_OPTIONS})
    assert [m.id for m in found] == ["leek.E003"]
    assert "'other'" in found[0].msg


def test_sqlite_short_timeout_is_e005(tmp_path):
    name = make_sqlite(tmp_path / "wal.sqlite3", wal=True)
    found = checks._check_sqlite(
        "default", {"NAME": name, "OPTIONS": {**GOOD_OPTIONS, "timeout": 1}}
    )
    assert [m.id for m in found] == ["leek.E005"]
    assert found[0].level == django_checks.ERROR


def test_sqlite_deferred_transactions_is_w001(tmp_path):
    name = make_sqlite(tmp_path / "wal.sqlite3", wal=True)
    found = checks._check_sqlite("default", {"NAME": name, "OPTIONS": {"timeout": 20}})
    assert [m.id for m in found] == ["leek.W001"]
    assert found[0].level == django_checks.WARNING


def test_sqlite_with_every_problem(tmp_path):
    name = make_sqlite(tmp_path / "plain.sqlite3", wal=False)
    found = checks._check_sqlite("default", {"NAME": name, "OPTIONS": {"timeout": 1}})
    assert sorted(m.id for m in found) == ["leek.E004", "leek.E005", "leek.W001"]


# --- a real server refuses a public address without a secret ---------------------------------


def test_server_refuses_a_public_bind_without_a_secret(start_server):
    server = start_server("--bind", "0.0.0.0:0", expect_start=False, point_client=False)
    code = server.wait_exit(60)
    assert code != 0
    log = server.log()
    assert "secret" in log
    assert "leek serving" not in log
