"""The server side: the TCP listener, the backlog of ids, the table sweep, the server's row.

All of it runs in the server process (`manage.py leek`): the listener in a thread of its own,
the heartbeat (the server's row, the operators' orders) in another, the scheduler
(the periodic tasks' slots) in a third, the sweep in the main
thread, called by the supervisor's loop (leek.pool), which takes ids from the backlog for its
workers. This package never imports leek.pool; the command wires them.
"""

from leek.server.backlog import Backlog
from leek.server.heartbeat import Heartbeat
from leek.server.listener import Listener
from leek.server.scheduler import Scheduler
from leek.server.sweep import Sweeper

__all__ = ["Backlog", "Heartbeat", "Listener", "Scheduler", "Sweeper"]
