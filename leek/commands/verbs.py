"""`manage.py leek retry|cancel|terminate ID...`: the operator's verbs on tasks, from a shell.

Runs in the shell that calls it; each verb is one function of leek.control, the same the
admin calls, with the shell's user recorded. Exit code NOT_DONE when an id was not in a
state the verb acts on (or does not exist), after saying what was done.
"""

from __future__ import annotations

import getpass
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from leek import control
from leek.models import Task, TaskStatus

NOT_DONE = 1

# Verb -> (the function, the state it acts on, what it did).
VERBS = {
    "retry": (control.retry, TaskStatus.FAILED, "retried (READY again)"),
    "cancel": (control.cancel, TaskStatus.READY, "cancelled"),
    "terminate": (control.terminate, TaskStatus.RUNNING, "asked to terminate"),
}


def add_arguments(parser: CommandParser) -> None:
    """Declare the task ids a verb acts on."""
    parser.add_argument("ids", nargs="+", type=int, metavar="ID", help="task ids")


def run(command: BaseCommand, options: dict[str, Any]) -> None:
    """Act on the ids; print what was done and why the rest were not."""
    verb = options["subcommand"]
    act, wanted, did = VERBS[verb]
    done = act(options["ids"], getpass.getuser())
    if done:
        command.stdout.write(f"{did}: task {', '.join(str(i) for i in done)}")
    rest = [task_id for task_id in dict.fromkeys(options["ids"]) if task_id not in done]
    if not rest:
        return
    found = dict(Task.objects.filter(id__in=rest).values_list("id", "status"))
    why = [
        f"task {task_id} is {found[task_id]}" if task_id in found else f"no task {task_id}"
        for task_id in rest
    ]
    raise CommandError(
        f"cannot {verb} {', '.join(why)}: {verb} acts on {wanted} tasks", returncode=NOT_DONE
    )
