"""The worker pool: worker processes and the supervisor that keeps them up.

The supervisor (supervisor.py) runs in the server process's main thread, with its parts:
roster.py (the worker processes), dispatch.py (which worker gets which ids), outcomes.py and
losses.py (how tasks ended), limits.py, boot.py, signals.py, handles.py (each worker as the
supervisor sees it), messages.py and interfaces.py. Workers (worker.py, loop.py) are spawned
processes. Nothing is imported here: a spawned worker imports leek.pool.worker before Django
is set up. This package never imports leek.server; the command wires the two.
"""
