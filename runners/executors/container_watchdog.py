"""Kills a job's container when the agent that owns it dies (the process supervisor does the same for process jobs
through its owner pid). Run as ``python -I -S container_watchdog.py CONTAINER_ID`` with a pipe on stdin: the agent
writes "done" when it no longer needs it; end of input without that means the agent is gone (SIGKILLed with its
node's Ray worker), and the container must not run on unowned. Standard library only, no polling."""
import http.client
import os
import socket
import sys

_HOST = os.environ.get("DOCKER_HOST", "")
DOCKER_SOCKET = _HOST[len("unix://"):] if _HOST.startswith("unix://") else "/var/run/docker.sock"


class _UnixConnection(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(DOCKER_SOCKET)


def main() -> int:
    container = sys.argv[1]
    if sys.stdin.buffer.read().strip() == b"done":
        return 0
    conn = _UnixConnection("localhost", timeout=30)
    conn.request("POST", f"/containers/{container}/kill?signal=KILL")
    conn.getresponse().read()
    return 0


if __name__ == "__main__":
    sys.exit(main())
