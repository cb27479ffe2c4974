"""Settings that make worker processes boot slowly, so that a test can kill them booting.

The server process imports them at once; a worker sleeps LEEK_SUP_BOOT_DELAY seconds first.
"""

import multiprocessing
import os
import time

from tests.settings import *  # noqa: F403

if multiprocessing.parent_process() is not None:
    time.sleep(float(os.environ.get("LEEK_SUP_BOOT_DELAY", "2")))
