"""Read `settings.LEEK` into one frozen, validated `Settings` value.

Runs in every process that touches leek: the web process (client side), the server and its
workers. The parsed value is cached and dropped whenever Django's `setting_changed` signal
says `LEEK` changed (`override_settings` in tests).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from leek import schedules

DEFAULT_POOL = "default"


@dataclass(frozen=True, slots=True)
class Settings:
    """Every leek setting, with its default."""

    # Where the server listens, "HOST:PORT" (port 0 picks a free one).
    bind: str = "localhost:8002"
    # Where web processes send their notifications.
    host: str = "localhost"
    port: int = 8002
    # Worker processes of the server.
    workers: int = 1
    # Pools (queue names) the server runs; empty means every pool.
    pools: tuple[str, ...] = ()
    # Seconds between two sweeps of the table for READY tasks nobody announced.
    sweep_interval: float = 1.0
    # Client side: seconds to wait for the server to accept a connection and a notification.
    connect_timeout: float = 0.5
    send_timeout: float = 0.5
    # Run offloaded tasks at once in the calling process (tests, local development).
    eager: bool = False
    # Shared secret clients must present; required when `bind` is not a loopback address.
    secret: str = ""
    # Server limits: 0 turns each off.
    # Retire a worker whose resident memory (with its children's) passed this many MB.
    max_memory: int = 0
    # Kill a worker at once, mid-task, past this many MB.
    max_memory_hard: int = 0
    # Retire a worker after about this many tasks.
    max_tasks_per_worker: int = 0
    # Seconds a task may run unless its @leek.task(timeout=...) says otherwise.
    task_timeout: float = 0
    # Seconds running tasks get to finish on SIGTERM / SIGINT.
    shutdown_timeout: float = 30.0
    # Modules a worker imports at boot besides each installed app's `tasks` module.
    task_modules: tuple[str, ...] = ()
    # The key stored pickles are signed with (empty: SECRET_KEY), and older keys that still
    # verify (empty: SECRET_KEY_FALLBACKS), for a rotation.
    signing_key: str = ""
    signing_key_fallbacks: tuple[str, ...] = ()
    # How `.offload()` stores a call and its return value: "pickle" (any Python value) or
    # "json" (plain data only; workers then refuse every pickled row).
    serializer: str = "pickle"
    # Seconds between two heartbeats of a server's row in the table.
    heartbeat_interval: float = 5.0
    # Seconds after its last heartbeat that a server counts as stale (gone).
    server_lease: float = 60.0
    # How long finished tasks are kept, by status ("7d", "12h", "15m", "30s"); the server
    # deletes older ones. Empty: kept for ever.
    retention: tuple[tuple[str, float], ...] = ()
    # Bearer token that lets a scraper read leek.views.metrics without a staff login
    # (`Authorization: Bearer <token>`). Empty: staff only.
    metrics_token: str = ""
    # Periodic tasks named here, with their arguments (leek.schedules.from_setting):
    # {"nightly-report": {"task": "reports.tasks.build", "cron": "0 3 * * *"}, ...}.
    schedules: tuple[schedules.Spec, ...] = ()
    # The server process's own database connections (not the workers'): seconds a connect or
    # a statement may take, and a silent database is given, before it counts as an error.
    # 0: no bound. SQLite's waits are bounded by its OPTIONS["timeout"].
    db_timeout: float = 10.0

    @property
    def bind_address(self) -> tuple[str, int]:
        """Return `bind` split into host and port."""
        return split_address(self.bind)

    @property
    def bind_is_loopback(self) -> bool:
        """Tell whether the server listens on this machine only."""
        return is_loopback(self.bind_address[0])

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with some values changed, validated like the originals."""
        # Shallow: the schedules stay Spec values, which from_mapping takes as they are.
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return from_mapping({**values, **changes})


_TYPES: dict[str, tuple[type, ...]] = {
    "bind": (str,),
    "host": (str,),
    "port": (int,),
    "workers": (int,),
    "pools": (list, tuple),
    "sweep_interval": (int, float),
    "connect_timeout": (int, float),
    "send_timeout": (int, float),
    "eager": (bool,),
    "secret": (str,),
    "max_memory": (int,),
    "max_memory_hard": (int,),
    "max_tasks_per_worker": (int,),
    "task_timeout": (int, float),
    "shutdown_timeout": (int, float),
    "task_modules": (list, tuple),
    "signing_key": (str,),
    "signing_key_fallbacks": (list, tuple),
    "serializer": (str,),
    "heartbeat_interval": (int, float),
    "server_lease": (int, float),
    "retention": (dict, tuple),
    "metrics_token": (str,),
    "schedules": (dict, tuple),
    "db_timeout": (int, float),
}


def split_address(address: str) -> tuple[str, int]:
    """Split "HOST:PORT" (or "[::1]:PORT") into its parts."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ImproperlyConfigured(
            f"LEEK['bind'] = {address!r} is not HOST:PORT; write it like '127.0.0.1:8002'."
        )
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    """Tell whether `host` names this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def from_mapping(raw: Mapping[str, Any]) -> Settings:
    """Validate a `LEEK` dict and return its `Settings`; a bad value names its key."""
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured(f"settings.LEEK must be a dict, not {type(raw).__name__}.")
    unknown = sorted(set(raw) - set(_TYPES))
    if unknown:
        raise ImproperlyConfigured(
            f"LEEK[{unknown[0]!r}] is not a leek setting; the settings are: "
            + ", ".join(sorted(_TYPES))
            + "."
        )
    for key, value in raw.items():
        _check_type(key, value)
    values = dict(raw)
    for key in ("pools", "task_modules", "signing_key_fallbacks"):
        if key in values:
            values[key] = tuple(values[key])
    if "retention" in values:
        values["retention"] = _retention(values["retention"])
    if "schedules" in values:
        try:
            values["schedules"] = schedules.from_setting(values["schedules"])
        except schedules.ScheduleError as exc:
            raise ImproperlyConfigured(str(exc)) from exc
    settings = Settings(**values)
    _check_values(settings)
    return settings


# The units a duration may be written in, in seconds.
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# The statuses whose rows may be deleted: those of finished tasks.
FINISHED = ("SUCCESSFUL", "FAILED")


def parse_duration(text: str) -> float:
    """Read a duration such as "30s", "15m", "12h" or "7d" as seconds; ValueError if bad."""
    number, unit = text.strip()[:-1], text.strip()[-1:].lower()
    if unit not in _UNITS or not number.isdigit() or int(number) <= 0:
        raise ValueError(
            f"{text!r} is not a duration; write a whole number and a unit: 30s, 15m, 12h or 7d"
        )
    return float(int(number) * _UNITS[unit])


def _retention(raw: Mapping[str, Any] | tuple) -> tuple[tuple[str, float], ...]:
    """Read LEEK['retention'] ({"SUCCESSFUL": "7d", ...}) as (status, seconds) pairs."""
    pairs = raw.items() if isinstance(raw, Mapping) else raw
    found = []
    for status, age in pairs:
        if status not in FINISHED:
            raise ImproperlyConfigured(
                f"LEEK['retention'] names {status!r}; only finished tasks are deleted: "
                "write SUCCESSFUL or FAILED."
            )
        if isinstance(age, (int, float)) and not isinstance(age, bool) and age > 0:
            found.append((status, float(age)))
            continue
        try:
            found.append((status, parse_duration(age if isinstance(age, str) else repr(age))))
        except ValueError as exc:
            raise ImproperlyConfigured(f"LEEK['retention'][{status!r}]: {exc}.") from exc
    return tuple(sorted(found))


def _check_type(key: str, value: Any) -> None:
    types = _TYPES[key]
    # bool is an int in Python; a setting that wants a number must not take True.
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        wanted = " or ".join(t.__name__ for t in types)
        raise ImproperlyConfigured(
            f"LEEK[{key!r}] must be a {wanted}, not {type(value).__name__} ({value!r})."
        )


def _check_values(settings: Settings) -> None:
    split_address(settings.bind)
    if not 0 < settings.port < 65536:
        raise ImproperlyConfigured(f"LEEK['port'] = {settings.port} is not a TCP port (1-65535).")
    if settings.workers < 1:
        raise ImproperlyConfigured(f"LEEK['workers'] = {settings.workers}; it must be 1 or more.")
    for key in ("sweep_interval", "connect_timeout", "send_timeout", "heartbeat_interval"):
        if getattr(settings, key) <= 0:
            raise ImproperlyConfigured(f"LEEK[{key!r}] must be a positive number of seconds.")
    for key in (
        "max_memory",
        "max_memory_hard",
        "max_tasks_per_worker",
        "task_timeout",
        "db_timeout",
    ):
        if getattr(settings, key) < 0:
            raise ImproperlyConfigured(f"LEEK[{key!r}] must be 0 (off) or more.")
    _check_lease(settings)
    _check_metrics_token(settings.metrics_token)
    if settings.shutdown_timeout < 0:
        raise ImproperlyConfigured("LEEK['shutdown_timeout'] must be 0 or more seconds.")
    _check_names(settings)


SERIALIZERS = ("pickle", "json")


def _check_names(settings: Settings) -> None:
    if settings.serializer not in SERIALIZERS:
        raise ImproperlyConfigured(
            f"LEEK['serializer'] = {settings.serializer!r}; write 'pickle' or 'json'."
        )
    if not all(isinstance(key, str) and key for key in settings.signing_key_fallbacks):
        raise ImproperlyConfigured(
            "LEEK['signing_key_fallbacks'] must be a list of non-empty strings (old keys)."
        )
    for name in settings.task_modules:
        if not isinstance(name, str) or not all(p.isidentifier() for p in name.split(".")):
            raise ImproperlyConfigured(
                f"LEEK['task_modules'] holds {name!r}; give dotted module names like 'myapp.jobs'."
            )
    for pool in settings.pools:
        if not isinstance(pool, str) or not pool or any(c.isspace() for c in pool):
            raise ImproperlyConfigured(
                f"LEEK['pools'] holds {pool!r}; a pool name is a non-empty word without spaces."
            )


def _check_lease(settings: Settings) -> None:
    if settings.server_lease <= settings.heartbeat_interval:
        raise ImproperlyConfigured(
            f"LEEK['server_lease'] = {settings.server_lease:g} must be longer than "
            f"LEEK['heartbeat_interval'] = {settings.heartbeat_interval:g} (a few beats), or "
            "live servers would show as stale."
        )


# Fewest characters of a metrics token: a short one is guessed.
METRICS_TOKEN_MIN = 16


def _check_metrics_token(token: str) -> None:
    if token and (len(token) < METRICS_TOKEN_MIN or token != token.strip()):
        raise ImproperlyConfigured(
            f"LEEK['metrics_token'] must be at least {METRICS_TOKEN_MIN} characters without "
            "surrounding spaces; make one with: python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'"
        )


_cached: Settings | None = None


def get() -> Settings:
    """Return the current `Settings`, parsing `settings.LEEK` on first use."""
    global _cached
    if _cached is None:
        from django.conf import settings

        _cached = from_mapping(getattr(settings, "LEEK", {}))
    return _cached


@receiver(setting_changed)
def _forget(setting: str, **kwargs: Any) -> None:
    global _cached
    if setting == "LEEK":
        _cached = None
