"""Measure the floors leek is built on: an ORM insert, a multiprocessing.Queue, a TCP round trip.

Runs in the benchmark process before any server starts, except `_consume`, the target of the
spawned consumer processes of the queue floor: it must stay a module-level function here, so
that a spawned child can import it by name.
"""

from __future__ import annotations

import multiprocessing
import socket
import statistics
import threading
import time
from typing import Any

from common import Sizes, VerificationError, progress


def floor_insert(count: int) -> float:
    """Return one-row ORM inserts per second into the benchmark's database."""
    from benchapp.models import Row

    first = -10 * count
    start = time.perf_counter()
    for n in range(first, first + count):
        Row.objects.create(n=n)
    rate = count / (time.perf_counter() - start)
    Row.objects.filter(n__lt=0).delete()
    return rate


def _consume(queue: Any, done: Any) -> None:
    """Count items until a None; the consumer process of the queue floor."""
    done.put("ready")
    count = 0
    while queue.get() is not None:
        count += 1
    done.put(count)


def floor_queue(items: int, consumers: int = 2) -> float:
    """Return items per second through a spawn multiprocessing.Queue to `consumers` processes."""
    ctx = multiprocessing.get_context("spawn")
    queue, done = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_consume, args=(queue, done)) for _ in range(consumers)]
    for proc in procs:
        proc.start()
    try:
        for _ in procs:
            done.get(timeout=30)
        start = time.perf_counter()
        for i in range(items):
            queue.put(i)
        for _ in procs:
            queue.put(None)
        got = sum(done.get(timeout=60) for _ in procs)
        elapsed = time.perf_counter() - start
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
    if got != items:
        raise VerificationError(f"queue floor: {got} of {items} items arrived")
    return items / elapsed


def _echo(server: socket.socket, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            data = conn.recv(64)
            if data:
                conn.sendall(data)


def floor_tcp(samples: int) -> float:
    """Return the median seconds of a loopback TCP connect plus one round trip."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    thread = threading.Thread(target=_echo, args=(server, stop), daemon=True)
    thread.start()
    port = server.getsockname()[1]
    times = []
    try:
        for _ in range(samples):
            start = time.perf_counter()
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.sendall(b"ping\n")
                sock.recv(64)
            times.append(time.perf_counter() - start)
    finally:
        stop.set()
        server.close()
        thread.join(timeout=5)
    return statistics.median(times)


def measure_floors(sizes: Sizes) -> dict:
    """Measure the three floors."""
    progress(f"floor: {sizes.inserts} ORM inserts")
    insert = floor_insert(sizes.inserts)
    progress(f"floor: {sizes.queue_items} ints through a multiprocessing.Queue")
    queue = floor_queue(sizes.queue_items)
    progress(f"floor: {sizes.tcp_samples} loopback TCP connect + round trip")
    tcp = floor_tcp(sizes.tcp_samples)
    return {
        "orm_insert_per_s": round(insert, 1),
        "mp_queue_2_consumers_per_s": round(queue, 1),
        "tcp_connect_rtt_ms": round(tcp * 1000, 4),
    }
