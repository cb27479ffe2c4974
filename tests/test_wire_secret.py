"""The shared secret across a real network link: a server bound off loopback, and clients in
a network namespace this test makes (veth pair, addresses of its own, nothing leaves the
machine). Needs root and iproute2; skipped where the namespace cannot be made."""

import json
import os
import subprocess
import sys
import uuid

from leek.models import Task, TaskStatus
from tests import tasks
from tests.conftest import ROOT

SECRET = "wire-test-" + uuid.uuid4().hex


def test_a_server_off_loopback_proves_clients_by_challenge_and_refuses_replays(
    start_server, netns
):
    # No sweep but the one at start: a task runs only if its notification was taken.
    env = {"LEEK_TEST_SECRET": SECRET, "LEEK_TEST_SWEEP_INTERVAL": "3600"}
    server = start_server(
        "--bind", f"{netns.host_address}:0", env=env, point_client=False, expect_start=False
    )
    server._wait_started()
    server.host, server.secret = netns.host_address, SECRET
    server.wait_workers(1)
    handle = tasks.add.offload(20, 22)  # its own notification goes nowhere (no server there)
    probe = subprocess.run(
        ["ip", "netns", "exec", netns.name, sys.executable, "-m", "tests.wire_probe"]
        + [netns.host_address, str(server.port), SECRET, str(handle.id)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=60,
        check=True,
    )
    said = json.loads(probe.stdout)
    assert said["hello"].startswith("hello ")
    assert SECRET not in said["hello"]
    assert said["no_secret"].startswith("error this server wants 'auth <proof>' first")
    assert said["wrong_secret"] == "error bad secret\n"
    assert said["right_secret"] == "pong\n"
    assert said["replay"] == "error bad secret\n"
    listener = said["stats"]["listener"]
    assert listener["bad_auths"] == 2
    assert listener["notifications"] == 1  # the proven client's, and only it
    assert handle.wait(60).status == TaskStatus.SUCCESSFUL
    assert handle.return_value == 42
    assert Task.objects.filter(status=TaskStatus.RUNNING).count() == 0
