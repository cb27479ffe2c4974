"""A server cut from the database by its network link: another settles its tasks, and its late
results change nothing when it comes back.

The cut server runs in a network namespace of this test's own (tests.conftest.netns), with a
host name of its own (a UTS namespace: the other server, on this machine's name, then takes
it for another machine's), and reaches PostgreSQL through a forwarder on the veth address.
`ip link set down` on this end of the link cuts it: its end stays up, without a carrier, so
its packets vanish and nothing refuses them (a partition, a firewall that drops), the fault
that only timeouts of its own (LEEK["db_timeout"]) get it out of. Needs root, iproute2 and
unshare; PostgreSQL only (SQLite has no network).
"""

import shutil
import socket
import uuid

import pytest

from leek import wire
from leek.models import Server, Task, TaskStatus
from tests import tasks
from tests.conftest import ip, requires_postgres, wait_until
from tests.forwarder import Forwarder

LOST = "leek.exceptions.WorkerLost"
SECRET = "netcut-" + uuid.uuid4().hex
POOL = "netcut"
# Beat often and take a server for gone after 3 s; the cut one gives up on a silent
# database after 2 s.
QUICK = {"LEEK_TEST_HEARTBEAT_INTERVAL": "0.5", "LEEK_TEST_SERVER_LEASE": "3"}


@requires_postgres
def test_a_server_cut_off_is_settled_by_another_and_its_late_results_change_nothing(
    start_server, netns
):
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) for a host name of the cut server's own")
    forwarder = Forwarder(bind=netns.host_address)
    forwarder.start()
    try:
        cut_and_return(start_server, netns, forwarder)
    finally:
        forwarder.close()


def start_cut_server(start_server, netns, forwarder, host):
    env = {**QUICK, **forwarder.env, "LEEK_TEST_SECRET": SECRET, "LEEK_TEST_DB_TIMEOUT": "2"}
    wrap = ["ip", "netns", "exec", netns.name, "unshare", "--uts"]
    wrap += ["sh", "-c", 'hostname "$0" && exec "$@"', host]
    server = start_server(
        "--bind",
        f"{netns.guest_address}:0",
        "--pool",
        POOL,
        workers=2,
        env=env,
        wrap=wrap,
        point_client=False,
        expect_start=False,
    )
    server._wait_started()
    server.host, server.secret = netns.guest_address, SECRET
    server.wait_workers(2)
    return server


def cut_and_return(start_server, netns, forwarder):
    other = start_server("--pool", "default", workers=1, env=QUICK)
    host = f"leek-cut-{uuid.uuid4().hex[:6]}"
    cut = start_cut_server(start_server, netns, forwarder, host)
    in_pool = tasks.sleep_seconds.using(pool=POOL)
    late = in_pool.offload(8)  # ends after the link is back: its outcome comes late
    timed = in_pool.using(timeout=6).offload(60)  # the cut server's time limit ends it
    ids = [late.id, timed.id]
    running = Task.objects.filter(id__in=ids, status=TaskStatus.RUNNING, worker_host=host)
    wait_until(lambda: running.count() == 2, 60, "both tasks to run on the cut server")
    timed_pid = Task.objects.get(pk=timed.id).worker_pid
    ip("link", "set", netns.host_link, "down")
    try:
        failed = Task.objects.filter(id__in=ids, status=TaskStatus.FAILED)
        wait_until(lambda: failed.count() == 2, 30, "the other server to settle both")
        settled = dict(failed.values_list("id", "traceback"))
        by = f"settled by server {socket.gethostname()}:{other.pid}"
        for traceback in settled.values():
            assert traceback.startswith(LOST), traceback
            assert f"on {host} was lost with its server {host}:{cut.pid}" in traceback
            assert by in traceback
        # Its loop went on supervising while its database was silent: the time limit.
        wait_until(
            lambda: f"killed worker {timed_pid}" in cut.log(), 30, "the cut server's time limit"
        )
    finally:
        ip("link", "set", netns.host_link, "up")
    wait_until(
        lambda: (
            f"the outcome of task {late.id} tests.tasks.sleep_seconds (SUCCESSFUL) was "
            "discarded" in cut.log()
        ),
        60,
        "the late outcome to be refused",
    )
    wait_until(
        lambda: f"task {timed.id}: the loss of worker {timed_pid} on {host}" in cut.log(),
        30,
        "the late loss to be refused",
    )
    assert dict(Task.objects.filter(id__in=ids).values_list("id", "traceback")) == settled
    # Back, it beats and serves again.
    assert cut.request(wire.PING) == wire.PONG
    back = in_pool.offload(0).wait(60)
    assert (back.status, back.task.worker_host) == (TaskStatus.SUCCESSFUL, host)
    row = Server.objects.get(host=host, pid=cut.pid)
    wait_until(lambda: Server.objects.get(pk=row.pk).stopped_at is None, 30, "its row live")
