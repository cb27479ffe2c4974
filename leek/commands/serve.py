"""`manage.py leek` with no subcommand: build the settings, wire listener and pool, serve.

Runs in the server process. Everything else lives in leek.server and leek.pool.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections, router

from leek import client, conf
from leek.models import Task
from leek.pool.limits import Limits
from leek.pool.supervisor import Supervisor
from leek.retention import Purger
from leek.server import Backlog, Heartbeat, Listener, Scheduler, Sweeper, dbtimeouts

# Options that override the LEEK setting of the same name.
_OVERRIDES = (
    "workers",
    "bind",
    "pools",
    "shutdown_timeout",
    "max_memory",
    "max_memory_hard",
    "max_tasks_per_worker",
    "task_timeout",
)


def add_arguments(parser: CommandParser) -> None:
    """Declare the server's options; each overrides its LEEK setting."""
    parser.add_argument("--workers", type=int, help="worker processes (default 1)")
    parser.add_argument("--bind", help="HOST:PORT to listen on (default LEEK['bind'])")
    parser.add_argument(
        "--pool",
        action="extend",
        nargs="+",
        dest="pools",
        metavar="NAME",
        help="serve only these pools (default: every pool)",
    )
    parser.add_argument("--burst", action="store_true", help="run every due READY task, then exit")
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        metavar="SECONDS",
        help="seconds running tasks get to finish on SIGTERM/SIGINT (default 30)",
    )
    parser.add_argument(
        "--max-memory",
        type=int,
        metavar="MB",
        help="replace a worker whose resident memory passed MB after a task",
    )
    parser.add_argument(
        "--max-memory-hard",
        type=int,
        metavar="MB",
        help="kill a worker at once, mid-task, past MB (its task is lost)",
    )
    parser.add_argument(
        "--max-tasks-per-worker",
        type=int,
        metavar="N",
        help="replace a worker after about N tasks",
    )
    parser.add_argument(
        "--task-timeout",
        type=float,
        metavar="SECONDS",
        help="kill a task that runs longer, unless @leek.task(timeout=...) says otherwise",
    )


def run(command: BaseCommand, options: dict[str, Any]) -> None:
    """Serve until a signal says stop."""
    settings = _settings(options)
    _configure_logging(options["verbosity"])
    # The loop must not hang on a database that stops answering; the workers' tasks may
    # run long queries, and their processes do not inherit this.
    dbtimeouts.apply(settings.db_timeout)
    backlog = Backlog(settings.pools)
    listener = None
    if not options["burst"]:
        try:
            listener = Listener(
                settings.bind_address,
                backlog.add_announced,
                lambda: {**supervisor.stats(), "ready": heartbeat.ready},
                settings.secret,
            )
        except OSError as exc:
            raise CommandError(f"cannot listen on {settings.bind}: {exc}") from exc
    heartbeat = Heartbeat(
        "" if listener is None else "{}:{}".format(*listener.address),
        settings.pools,
        settings.heartbeat_interval,
        Purger(settings.retention) if settings.retention else None,
        lease=settings.server_lease,
    )
    supervisor = Supervisor(
        backlog,
        Sweeper(backlog, settings.sweep_interval),
        workers=settings.workers,
        limits=Limits(
            max_memory=settings.max_memory,
            max_memory_hard=settings.max_memory_hard,
            max_tasks=settings.max_tasks_per_worker,
            task_timeout=settings.task_timeout,
            shutdown_timeout=settings.shutdown_timeout,
        ),
        burst=options["burst"],
        listener=listener,
        reporter=heartbeat,
    )
    scheduler = None
    if listener is not None:  # a burst runs what is due and leaves; it takes no slots
        address = listener.address
        scheduler = Scheduler(
            lambda pool, priority, ids: client.announce(
                address, settings.secret, pool, priority, ids
            )
        )
    command.stdout.write(_banner(settings, listener))
    command.stdout.flush()
    heartbeat.start()
    if scheduler is not None:
        scheduler.start()
    try:
        code = supervisor.run()
    finally:
        if scheduler is not None:
            scheduler.stop()
        if listener is not None:
            listener.close()
        heartbeat.stop()
    if code:
        sys.exit(code)


def _settings(options: dict[str, Any]) -> conf.Settings:
    changes = {key: options[key] for key in _OVERRIDES if options.get(key) is not None}
    try:
        settings = conf.get().replace(**changes)
    except ImproperlyConfigured as exc:
        raise CommandError(str(exc)) from exc
    if not settings.bind_is_loopback and not settings.secret:
        raise CommandError(
            f"refusing to listen on {settings.bind} without LEEK['secret']: anyone who "
            "can reach it could make the workers run tasks. Set a secret or bind to "
            "127.0.0.1."
        )
    return settings


def _banner(settings: conf.Settings, listener: Listener | None) -> str:
    db = connections[router.db_for_write(Task)].settings_dict
    where = "in burst mode"
    if listener is not None:
        host, port = listener.address
        where = f"on {host}:{port}"
    pools = ", ".join(settings.pools) or "all pools"
    return (
        f"leek serving {pools} {where} with {settings.workers} worker(s), "
        f"database {db['ENGINE'].rsplit('.', 1)[-1]} {db['NAME']}"
    )


def _configure_logging(verbosity: int) -> None:
    """Show leek's log on stderr unless the project's LOGGING already routes it."""
    logger = logging.getLogger("leek")
    if logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter("%(asctime)s leek[%(process)d] %(levelname)s %(message)s")
    )
    logger.addHandler(handler)
    logger.setLevel({0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG))
    logger.propagate = False
