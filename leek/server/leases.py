"""Settle the tasks of servers that stopped beating: the lease rule of several servers.

Runs in the server process, in the heartbeat thread (leek.server.heartbeat), never in the
supervisor's loop. A server killed, powered off or cut from the network stops beating; once
its heartbeat is older than LEEK["server_lease"], any other live server settles the tasks its
workers left RUNNING, under the worker-lost rule (FAILED, or READY again within lost_retries),
and names itself on each. Each settlement is a conditional write on the task's claim (host,
pid, attempt): two servers settling at once settle each task once, and a server that comes
back after its tasks were settled cannot overwrite them (leek.states.Claim).

A task runs on its worker's host, whose pids only a server on that host can check. So a
server settles the stale server's tasks when it is on the same host and the worker's pid is
gone, or when no live server is left on that host at all (its workers die with their server).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import router

from leek import dbclock
from leek.models import Server, Task, TaskStatus
from leek.processes import may_hold
from leek.states import Claim

logger = logging.getLogger("leek.server")


def settle_stale(host: str, pid: int, lease: float) -> int:
    """Settle the tasks of servers whose lease ran out, as server `pid` on `host`.

    Return how many tasks were settled. Database errors are the caller's.
    """
    now = dbclock.now(router.db_for_write(Server))  # the time heartbeats are written in
    deadline = now - timedelta(seconds=lease)
    running = Server.objects.filter(stopped_at__isnull=True)
    live_hosts = set(running.filter(heartbeat_at__gte=deadline).values_list("host", flat=True))
    settled = 0
    for stale in running.filter(heartbeat_at__lt=deadline).exclude(host=host, pid=pid):
        if stale.host != host and stale.host in live_hosts:
            continue  # a live server on that host checks its pids
        count, left = _settle(stale, host, pid, lease)
        settled += count
        if not left:  # done with it, unless it came back meanwhile (then it beat since)
            gone = Server.objects.filter(pk=stale.pk, heartbeat_at=stale.heartbeat_at)
            gone.update(stopped_at=now)
    return settled


def _settle(stale: Server, host: str, pid: int, lease: float) -> tuple[int, int]:
    """Settle the RUNNING tasks that the workers of `stale` may have held.

    Return how many were settled, and how many were left to a live worker on this host.
    """
    same_host = stale.host == host
    rows = Task.objects.filter(
        status=TaskStatus.RUNNING, worker_host=stale.host, started_at__gte=stale.started_at
    ).values_list("id", "callable_path", "worker_pid", "started_at", "attempts")
    settled = left = 0
    for task_id, path, worker, started_at, attempt in rows:
        if same_host and may_hold(worker, started_at):
            left += 1  # a live worker: another server's on this host, or this one's
            continue
        beat = stale.heartbeat_at.isoformat(timespec="seconds")
        reason = (
            f"worker {worker} on {stale.host} was lost with its server {stale.host}:"
            f"{stale.pid}, whose last heartbeat was at {beat} (lease {lease:g} s), while "
            f"running task {task_id} {path}; settled by server {host}:{pid}"
        )
        status = Task.objects.lose(task_id, Claim(worker, stale.host, attempt), reason)
        if status:
            logger.error("task %s: %s (%s)", task_id, reason, status)
            settled += 1
    return settled, left
