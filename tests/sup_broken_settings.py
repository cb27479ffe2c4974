"""Settings whose import fails in worker processes only, to test the boot-failure paths.

The server process (no multiprocessing parent) imports them fine. In a worker they raise
ImportError always, or, when LEEK_SUP_BREAK_FILE names a file, only while that file exists
(so that a test can break the next generation of workers and then reload).
"""

import multiprocessing
import os

from tests.settings import *  # noqa: F403

_MARKER = os.environ.get("LEEK_SUP_BREAK_FILE", "")
if multiprocessing.parent_process() is not None and (not _MARKER or os.path.exists(_MARKER)):
    raise ImportError("tests.sup_broken_settings: this deploy is broken (on purpose)")
