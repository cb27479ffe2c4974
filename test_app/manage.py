#!/usr/bin/env python
"""Run Django's command line for the leek example project."""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    """Put the checkout and the example on sys.path, then run the command."""
    # The repository root, so that `import leek` finds the checkout; then this folder,
    # so that `example` imports.
    for path in (HERE.parent, HERE):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
