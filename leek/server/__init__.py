"""The server side of the wire: the TCP listener, the backlog of ids and the table sweep.

All of it runs in the server process (`manage.py leek`): the listener in a thread of its own,
the sweep in the main thread, called by the supervisor's loop (leek.pool), which takes ids from
the backlog for its workers. This package never imports leek.pool; the command wires them.
"""

from leek.server.backlog import Backlog
from leek.server.listener import Listener
from leek.server.sweep import Sweeper

__all__ = ["Backlog", "Listener", "Sweeper"]
