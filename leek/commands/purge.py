"""`manage.py leek purge --older-than 7d`: delete old finished tasks, in batches.

The rows of servers that stopped (or last beat) before then go too.

Runs in the shell that calls it. Each batch is its own short statement (leek.retention), so
no lock is held for long however many rows go.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from leek import conf, retention


def add_arguments(parser: CommandParser) -> None:
    """Declare the options of `purge`."""
    parser.add_argument(
        "--older-than",
        required=True,
        metavar="AGE",
        help="delete tasks that finished longer ago than this: 30s, 15m, 12h, 7d",
    )
    parser.add_argument(
        "--status",
        default=",".join(conf.FINISHED),
        metavar="STATUS[,STATUS]",
        help="which finished tasks: SUCCESSFUL, FAILED or both (default both)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="count what would go and delete nothing"
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=retention.BATCH,
        metavar="ROWS",
        help=f"rows per statement (default {retention.BATCH})",
    )


def run(command: BaseCommand, options: dict[str, Any]) -> None:
    """Delete (or count) the finished tasks older than --older-than."""
    try:
        age = conf.parse_duration(options["older_than"])
    except ValueError as exc:
        raise CommandError(f"--older-than: {exc}") from exc
    statuses = [s.strip().upper() for s in options["status"].split(",") if s.strip()]
    wrong = [s for s in statuses if s not in conf.FINISHED]
    if wrong or not statuses:
        raise CommandError(
            f"--status {options['status']!r}: only finished tasks can be purged; write "
            "SUCCESSFUL, FAILED or SUCCESSFUL,FAILED"
        )
    if options["batch"] < 1:
        raise CommandError("--batch must be 1 or more")
    before = timezone.now() - timedelta(seconds=age)
    which = f"{' and '.join(statuses)} tasks finished before {before:%Y-%m-%d %H:%M:%S %Z}"
    if options["dry_run"]:
        found = retention.count(statuses, before)
        command.stdout.write(f"would delete {found} {which} (dry run: nothing deleted)")
        return
    deleted = retention.purge(statuses, age, options["batch"])
    command.stdout.write(f"deleted {deleted} {which}")
    servers = retention.forget_servers(before)
    if servers:
        command.stdout.write(f"deleted the rows of {servers} servers gone since before then")
