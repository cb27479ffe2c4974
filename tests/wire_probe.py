"""A client of the wire for tests/test_wire_secret.py, run inside a network namespace.

    python -m tests.wire_probe HOST PORT SECRET TASK_ID

Tries the server's challenge as an attacker and as a client would, and prints what happened
as one JSON object. Needs leek.wire and leek.client, not Django's settings.
"""

import json
import socket
import sys

from leek import wire
from leek.client import read_line


def read_to_end(sock):
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def main(host, port, secret, task_id):
    address = (host, int(port))
    said = {}
    notify = b"".join(wire.format_notify("default", 0, [int(task_id)]))
    with socket.create_connection(address, timeout=10) as sock:
        said["hello"] = read_line(sock).decode()
        sock.sendall(notify)
        said["no_secret"] = read_to_end(sock).decode()
    with socket.create_connection(address, timeout=10) as sock:
        nonce = wire.parse_hello(read_line(sock))
        sock.sendall(wire.format_auth("not-the-secret", nonce) + notify)
        said["wrong_secret"] = read_to_end(sock).decode()
    with socket.create_connection(address, timeout=10) as sock:
        nonce = wire.parse_hello(read_line(sock))
        recorded = wire.format_auth(secret, nonce)
        sock.sendall(recorded + wire.PING)
        said["right_secret"] = read_line(sock).decode()
    with socket.create_connection(address, timeout=10) as sock:
        read_line(sock)
        sock.sendall(recorded + notify)
        said["replay"] = read_to_end(sock).decode()
    with socket.create_connection(address, timeout=10) as sock:
        nonce = wire.parse_hello(read_line(sock))
        sock.sendall(wire.format_auth(secret, nonce) + notify + wire.STATS)
        said["stats"] = wire.parse_stats(read_line(sock).strip())
    sys.stdout.write(json.dumps(said) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
