"""Import the project's task modules, as a worker does at boot.

Runs in worker processes only (the server process never imports task code). Every installed
app's `tasks` module is imported, as Celery's autodiscover_tasks and huey's Django
integration do, and then each module LEEK["task_modules"] names. A `tasks` module that exists
but does not import (a syntax error, a missing dependency) raises, and so does any named
module: the worker then fails its boot, and a reload keeps the old generation serving. An app
without a `tasks` module is passed over.
"""

from __future__ import annotations

from importlib import import_module

from django.utils.module_loading import autodiscover_modules

from leek import conf


def import_task_modules() -> None:
    """Import every app's `tasks` module and the modules of LEEK["task_modules"]."""
    autodiscover_modules("tasks")
    for name in conf.get().task_modules:
        import_module(name)
