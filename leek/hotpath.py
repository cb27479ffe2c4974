"""The three statements every task goes through, in plain SQL: insert, claim, success.

Run in web processes (`insert`, at offload time) and in workers (`claim` and `succeed`, in
one `transaction`). They are the transitions of leek.transitions.TaskQuerySet that happen once
per task, written out once per database vendor: the ORM's query compiler costs several
times the statement itself, and on SQLite it is the whole difference between a task and a
plain row insert. Every other transition stays in the ORM. Each UPDATE names its from-state,
as in leek.transitions.

A worker's transaction goes to the driver's own connection, past Django's cursor wrapper
and transaction bookkeeping (half of a worker's time per task, before this): Django's
connection stays in autocommit, errors are still Django's (wrap_database_errors), and the
query log does not see these statements.

On SQLite, one writer at a time holds the database, and a writer that finds it taken sleeps
a millisecond or more before it looks again: ten times what a task's transaction takes. So
leek's own writers (offloads outside a transaction, and workers between tasks) first take
turns on a file lock named after the database file, which wakes the next one at once. It
only orders them; SQLite's own locking still keeps the data safe, and without the lock file
(it cannot be made, or another machine shares the database) nothing changes but the speed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from django.db import connections
from django.db import transaction as django_transaction
from django.utils import timezone

from leek import throttle
from leek.models import PoolPause, Task, TaskStatus
from leek.states import Claim

# Columns an offload sets; every other column takes its model default.
OFFLOAD_COLUMNS = (
    "pool",
    "callable_path",
    "payload",
    "priority",
    "run_after",
    "enqueued_at",
    "timeout",
    "retries",
    "retry_backoff",
    "lost_retries",
    "encoding",
)
# Columns only a task with a unique key or limits sets, after OFFLOAD_COLUMNS (leek.keys);
# a plain task's INSERT leaves them to the database's defaults.
LIMIT_COLUMNS = ("unique_key", "unique_until", "limit_key", "max_concurrency", "rate_interval")
_DATETIMES = tuple(OFFLOAD_COLUMNS.index(c) for c in ("run_after", "enqueued_at"))
# What a worker needs to run a task it claimed.
CLAIM_COLUMNS = (
    "callable_path",
    "payload",
    "timeout",
    "attempts",
    "retries",
    "retry_backoff",
    "encoding",
)
# Rows in one INSERT: well under SQLite's limit of 32,766 parameters.
ROWS_PER_INSERT = 500


@dataclass(frozen=True, slots=True)
class Claimed:
    """A task a worker has just claimed: RUNNING, with what it needs to run it."""

    task_id: int
    callable_path: str
    payload: bytes
    timeout: float | None
    attempts: int
    retries: int
    retry_backoff: float
    # Encoding.PICKLE (an `.offload()`) or Encoding.JSON (the Django Tasks backend).
    encoding: str = "pickle"
    # Claimed under a limit key (leek.throttle): its end may let another task start.
    limited: bool = False


# The statements, written once per database vendor and parameter style.
_written: dict[tuple[str, bool], dict[str, Any]] = {}


def _statements(connection: Any, raw: bool) -> dict[str, Any]:
    meta = Task._meta
    q = connection.ops.quote_name
    table = q(meta.db_table)
    # The column defaults that are callables (now()) are all given; the others are adapted
    # as the ORM would save them (the empty history as JSON). The database computes the
    # generated ones.
    fixed = {
        f.column: f.get_db_prep_save(f.get_default(), connection)
        for f in meta.concrete_fields
        if not f.primary_key
        and not f.generated
        and f.column not in OFFLOAD_COLUMNS + LIMIT_COLUMNS
    }
    columns = ", ".join(q(c) for c in OFFLOAD_COLUMNS + tuple(fixed))
    limited = ", ".join(q(c) for c in OFFLOAD_COLUMNS + LIMIT_COLUMNS + tuple(fixed))
    # INSERT ... RETURNING: SQLite from 3.35, PostgreSQL, MariaDB from 10.5. UPDATE ...
    # RETURNING: the same but MariaDB.
    insert_returning = connection.features.can_return_columns_from_insert
    returning = connection.vendor in ("sqlite", "postgresql") and insert_returning
    claimed = ", ".join(q(c) for c in CLAIM_COLUMNS)
    # A task of a paused pool is not claimed (leek.control.pause): it holds on every server
    # from the moment the pause commits, whatever ids a worker was sent before.
    paused = q(PoolPause._meta.db_table)
    takeable = (
        "id = %s AND status = %s AND run_after <= %s "
        f"AND {q('pool')} NOT IN (SELECT {q('pool')} FROM {paused})"
    )
    claim = (
        f"UPDATE {table} SET status = %s, started_at = %s, worker_pid = %s, worker_host = %s, "
        "attempts = attempts + 1 WHERE "
    )
    # A row another worker (of this server or another) is claiming at this moment is
    # skipped at once, not waited for: it is that worker's. PostgreSQL locks it in a
    # subquery; MySQL and MariaDB cannot read the table an UPDATE writes in a subquery, so
    # they lock it with a statement of its own first (claim_lock).
    skip_locked = connection.features.has_select_for_update_skip_locked
    if skip_locked and connection.vendor == "postgresql":
        claim += f"id = (SELECT id FROM {table} WHERE {takeable} FOR UPDATE SKIP LOCKED)"
    else:
        claim += takeable
    claim_lock = None
    if skip_locked and connection.vendor == "mysql":
        claim_lock = f"SELECT id FROM {table} WHERE id = %s FOR UPDATE SKIP LOCKED"
    written = {
        "fixed": tuple(fixed.values()),
        "insert": f"INSERT INTO {table} ({columns}) VALUES ",
        "row": "(" + ", ".join(["%s"] * (len(OFFLOAD_COLUMNS) + len(fixed))) + ")",
        "insert_limited": f"INSERT INTO {table} ({limited}) VALUES ",
        "row_limited": "("
        + ", ".join(["%s"] * (len(OFFLOAD_COLUMNS) + len(LIMIT_COLUMNS) + len(fixed)))
        + ")",
        "insert_returning": insert_returning,
        "returning": returning,
        # A task under a limit is not claimed here, but by leek.throttle.
        "claim": claim + " AND limit_key IS NULL" + (f" RETURNING {claimed}" if returning else ""),
        "claim_limited": claim + (f" RETURNING {claimed}" if returning else ""),
        "claim_lock": claim_lock,
        "claimed": f"SELECT {claimed} FROM {table} WHERE id = %s",
        "reclaim": (
            f"SELECT {claimed} FROM {table} "
            "WHERE id = %s AND status = %s AND worker_pid = %s AND worker_host = %s"
        ),
        "succeed": (
            f"UPDATE {table} SET status = %s, finished_at = %s, result = %s, "
            f"{q('exception_class_path')} = '', {q('traceback')} = '' "
            "WHERE id = %s AND status = %s AND worker_pid = %s AND worker_host = %s "
            "AND attempts = %s"
        ),
        # SQLite: take the write lock at once, not on the first UPDATE (which could then
        # fail with "database is locked" instead of waiting its turn).
        "begin": "BEGIN IMMEDIATE" if connection.vendor == "sqlite" else "BEGIN",
        "param": "%s",
    }
    if raw and connection.vendor == "sqlite":  # the sqlite3 module's own parameter style
        written = {
            k: v.replace("%s", "?") if isinstance(v, str) else v for k, v in written.items()
        }
    return written


def _connection(alias: str, raw: bool = False) -> tuple[Any, dict[str, Any]]:
    connection = connections[alias]
    sql = _written.get((connection.vendor, raw))
    if sql is None:
        sql = _written[connection.vendor, raw] = _statements(connection, raw)
    return connection, sql


# The file lock of each SQLite database this process writes to: NAME -> (pid, fd).
_turns: dict[str, tuple[int, int]] = {}


def _turn_fd(connection: Any) -> int | None:
    if connection.vendor != "sqlite" or connection.is_in_memory_db():
        return None
    name = str(connection.settings_dict["NAME"])
    pid = os.getpid()
    found = _turns.get(name)
    if found is not None:
        if found[0] == pid:
            return found[1]
        # Forked: a lock shared with the parent would not keep the two apart.
        os.close(found[1])
    try:
        fd = os.open(turn_lock_path(name), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        return None
    _turns[name] = (pid, fd)
    return fd


def turn_lock_path(name: str) -> str:
    """Return the lock file leek's writers to the SQLite database `name` take turns on."""
    digest = hashlib.sha256(os.path.realpath(name).encode()).hexdigest()[:20]
    return os.path.join(tempfile.gettempdir(), f"leek-{digest}.lock")


@contextlib.contextmanager
def _turn(connection: Any) -> Iterator[None]:
    """Wait for this process's turn to write to the SQLite database (no-op elsewhere)."""
    fd = _turn_fd(connection)
    if fd is None:
        yield
        return
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def insert(alias: str, rows: Sequence[tuple], limited: bool = False) -> list[int]:
    """Insert READY tasks, each a tuple in OFFLOAD_COLUMNS order; return their ids in order.

    `limited`: each tuple goes on with the LIMIT_COLUMNS. Run inside a transaction when
    there is more than one row.
    """
    connection, sql = _connection(alias)
    adapt = connection.ops.adapt_datetimefield_value
    fixed = sql["fixed"]
    ids: list[int] = []
    # Inside a transaction this connection may hold SQLite's lock already: never wait for
    # the turn then, or a worker holding the turn and waiting for SQLite would deadlock.
    turn = contextlib.nullcontext() if connection.in_atomic_block else _turn(connection)
    with turn, connection.cursor() as cursor:
        # Without RETURNING, only a one-row INSERT tells its id (lastrowid).
        step = ROWS_PER_INSERT if sql["insert_returning"] else 1
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            params: list[Any] = []
            for row in chunk:
                values = list(row)
                for i in _DATETIMES:
                    values[i] = adapt(values[i])
                params += values
                params += fixed
            if limited:
                statement = sql["insert_limited"] + ", ".join([sql["row_limited"]] * len(chunk))
            else:
                statement = sql["insert"] + ", ".join([sql["row"]] * len(chunk))
            if sql["insert_returning"]:
                cursor.execute(statement + " RETURNING id", params)
                ids += [found[0] for found in cursor.fetchall()]
            else:
                cursor.execute(statement, params)
                ids.append(cursor.lastrowid)
    return ids


def _claimed(task_id: int, found: Sequence[Any] | None) -> Claimed | None:
    if found is None:
        return None
    path, payload, timeout, attempts, retries, backoff, encoding = found
    return Claimed(task_id, path, bytes(payload), timeout, attempts, retries, backoff, encoding)


class Writer:
    """The claim and success statements, on the cursor of one open transaction."""

    def __init__(self, alias: str, cursor: Any, sql: dict[str, Any], connection: Any) -> None:
        self.alias = alias
        self._cursor = cursor
        self._sql = sql
        self._adapt = connection.ops.adapt_datetimefield_value
        self.connection = connection
        # "%s", or "?" on SQLite's own driver: the statements of leek.throttle use it too.
        self.param = sql["param"]
        # A claim under a limit key found its key full: the transaction holds that key's
        # lock, and takes no other (leek.throttle), so it should end.
        self.refused = False

    @property
    def cursor(self) -> Any:
        """Return the cursor of the transaction, for the statements of leek.throttle."""
        return self._cursor

    def claim(self, task_id: int, pid: int, host: str) -> Claimed | None:
        """Take a READY, due task for the worker `pid`; None if it is not there to take."""
        sql, cursor = self._sql, self._cursor
        if sql["claim_lock"]:
            cursor.execute(sql["claim_lock"], (task_id,))
            if cursor.fetchone() is None:
                return None
        now = self._adapt(timezone.now())
        running, ready = TaskStatus.RUNNING.value, TaskStatus.READY.value
        cursor.execute(sql["claim"], (running, now, pid, host, task_id, ready, now))
        found = self._found(task_id)
        if found is None:
            return throttle.claim(self, task_id, pid, host)
        return _claimed(task_id, found)

    def claim_limited(self, task_id: int, pid: int, host: str, now: datetime) -> Claimed | None:
        """Take a READY, due task under a limit; the caller holds its key's lock."""
        running, ready = TaskStatus.RUNNING.value, TaskStatus.READY.value
        at = self._adapt(now)
        params = (running, at, pid, host, task_id, ready, at)
        self._cursor.execute(self._sql["claim_limited"], params)
        found = self._found(task_id)
        return None if found is None else replace(_claimed(task_id, found), limited=True)

    def _found(self, task_id: int) -> Sequence[Any] | None:
        """Return the claimed row of the UPDATE just run, or None if it changed nothing."""
        if self._sql["returning"]:
            return self._cursor.fetchone()
        if not self._cursor.rowcount:
            return None
        self._cursor.execute(self._sql["claimed"], (task_id,))
        return self._cursor.fetchone()

    def reclaim(self, task_id: int, pid: int, host: str) -> Claimed | None:
        """Return the task if the worker `pid` on `host` holds it RUNNING; else None.

        For an id whose claim went into a transaction the worker did not see end (the
        connection broke at COMMIT): the claim may have been committed all the same.
        """
        running = TaskStatus.RUNNING.value
        self._cursor.execute(self._sql["reclaim"], (task_id, running, pid, host))
        return _claimed(task_id, self._cursor.fetchone())

    def succeed(self, task_id: int, claim: Claim, result: bytes) -> bool:
        """Record that the task ran to the end under `claim`, and what it returned."""
        now = self._adapt(timezone.now())
        done, running = TaskStatus.SUCCESSFUL.value, TaskStatus.RUNNING.value
        mine = (task_id, running, claim.pid, claim.host, claim.attempt)
        self._cursor.execute(self._sql["succeed"], (done, now, result, *mine))
        return bool(self._cursor.rowcount)


@contextlib.contextmanager
def transaction(alias: str, raw: bool = False) -> Iterator[Writer]:
    """Open one write transaction for claims and successes; commit it on leaving.

    `raw`: on the driver's connection, for a worker between two tasks (never inside an
    atomic block); otherwise an ordinary `atomic()`, which may nest in the caller's.
    """
    connection, sql = _connection(alias, raw)
    if not raw:
        with django_transaction.atomic(using=alias), connection.cursor() as cursor:
            yield Writer(alias, cursor, sql, connection)
        return
    connection.ensure_connection()
    with _turn(connection), connection.wrap_database_errors:
        cursor = connection.connection.cursor()
        try:
            cursor.execute(sql["begin"])
            yield Writer(alias, cursor, sql, connection)
            cursor.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(connection.Database.Error):
                cursor.execute("ROLLBACK")
            raise
        finally:
            cursor.close()
