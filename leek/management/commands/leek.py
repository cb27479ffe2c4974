"""`manage.py leek [subcommand]`: parse the command line and call the subcommand's module.

With no subcommand it runs the server (leek.commands.serve), as it always has; the others
(status, purge, pause, resume, retry, cancel, terminate) are leek.commands modules. Runs in
the process that `manage.py` starts.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from leek.commands import pools, purge, serve, status, verbs

# Subcommand -> (its module, one line of help).
SUBCOMMANDS = {
    "status": (status, "show servers, workers and backlog; exit non-zero when unhealthy"),
    "purge": (purge, "delete finished tasks older than --older-than, in batches"),
    "pause": (pools, "stop starting the tasks of a pool (running ones finish)"),
    "resume": (pools, "start the tasks of a paused pool again"),
    "retry": (verbs, "run FAILED tasks again"),
    "cancel": (verbs, "end READY tasks before they start"),
    "terminate": (verbs, "kill the workers running these RUNNING tasks"),
}


class Command(BaseCommand):
    """Run the leek server, or one of its operating subcommands."""

    help = (
        "Run the leek task server (a listener and a pool of worker processes), or with a "
        "subcommand operate it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """Declare the server's options and the subcommands."""
        serve.add_arguments(parser)
        subcommands = parser.add_subparsers(
            dest="subcommand", metavar="SUBCOMMAND", title="subcommands (default: run the server)"
        )
        for name, (module, help_text) in SUBCOMMANDS.items():
            module.add_arguments(
                subcommands.add_parser(name, help=help_text, description=help_text)
            )

    def get_check_kwargs(self, options: dict[str, Any]) -> dict[str, Any]:
        """Run the system checks that need no database.

        Django 6 runs the model checks against every database unless told which: a JSONField
        then connects. A server must start, and wait, while its database is not up yet.
        """
        return {**super().get_check_kwargs(options), "databases": []}

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the subcommand, or the server when none is named."""
        name = options.get("subcommand")
        module = serve if name is None else SUBCOMMANDS[name][0]
        module.run(self, options)
