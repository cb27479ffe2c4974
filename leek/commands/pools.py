"""`manage.py leek pause POOL` and `manage.py leek resume POOL`.

Runs in the shell that calls it; the pause is a row in the table, which every server reads
before it starts a task (leek.control). The user recorded is the shell's.
"""

from __future__ import annotations

import getpass
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from leek import control


def add_arguments(parser: CommandParser) -> None:
    """Declare the pool argument of `pause` and `resume`."""
    parser.add_argument("pool", metavar="POOL", help="the pool's name")


def run(command: BaseCommand, options: dict[str, Any]) -> None:
    """Pause or resume the pool; say what changed."""
    pool, user = options["pool"], getpass.getuser()
    if options["subcommand"] == "pause":
        if control.pause(pool, user):
            command.stdout.write(f"paused pool {pool}: its READY tasks wait, running ones finish")
        else:
            command.stdout.write(f"pool {pool} was paused already")
    elif control.resume(pool, user):
        command.stdout.write(f"resumed pool {pool}")
    else:
        command.stdout.write(f"pool {pool} was not paused")
