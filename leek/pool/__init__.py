"""The worker pool: worker processes and the supervisor that keeps them up.

The supervisor (supervisor.py) runs in the server process's main thread; workers (worker.py)
are spawned processes. Nothing is imported here: a spawned worker imports leek.pool.worker
before Django is set up. This package never imports leek.server; the command wires the two.
"""
