"""The shared secret across a real network link: a server bound off loopback, and clients in
a network namespace this test makes (veth pair, addresses of its own, nothing leaves the
machine). Needs root and iproute2; skipped where the namespace cannot be made."""

import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import uuid
from types import SimpleNamespace

import pytest

from leek.models import Task, TaskStatus
from tests import tasks
from tests.conftest import ROOT

SECRET = "wire-test-" + uuid.uuid4().hex


def ip(*args, netns=None):
    command = ["ip", *(["netns", "exec", netns, "ip"] if netns else []), *args]
    subprocess.run(command, check=True, capture_output=True, timeout=30)


@pytest.fixture
def netns():
    """A network namespace joined to this one by a veth pair: 10.a.b.1 here, .2 there."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to make a network namespace")
    tag = uuid.uuid4().hex[:6]
    name, here, there = f"leek-{tag}", f"lk{tag}a", f"lk{tag}b"
    subnet = f"10.{random.randint(200, 250)}.{random.randint(0, 255)}"
    try:
        ip("netns", "add", name)
        ip("link", "add", here, "type", "veth", "peer", "name", there)
        ip("link", "set", there, "netns", name)
        ip("addr", "add", f"{subnet}.1/30", "dev", here)
        ip("link", "set", here, "up")
        ip("addr", "add", f"{subnet}.2/30", "dev", there, netns=name)
        ip("link", "set", there, "up", netns=name)
    except subprocess.CalledProcessError as exc:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", here], capture_output=True, timeout=30)
        pytest.skip(f"cannot make a network namespace here: {exc.stderr.decode().strip()}")
    try:
        yield SimpleNamespace(name=name, host_address=f"{subnet}.1")
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        with contextlib.suppress(subprocess.SubprocessError):
            subprocess.run(["ip", "link", "del", here], capture_output=True, timeout=30)


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
