"""Free loopback ports and readiness waits for the embedded stack."""

from __future__ import annotations

import socket
import time

import httpx

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A port that is free right now on `host`.

    The kernel picks it (bind to port 0); the socket is closed again, so a caller that hands the number to a
    child process can race with other processes. Callers that can retry on "address in use" should.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether `port` can be bound on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts connections on `host:port`."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def bind_socket(host: str = LOOPBACK, port: int = 0) -> socket.socket:
    """A listening socket (port 0 = any free port), for servers we run: handing the socket to uvicorn avoids
    the free_port() race entirely. It listens at once because SO_REUSEADDR lets another process bind the same
    port while neither listens, and then the second to listen fails (two `aicd demo`s both taking 8090)."""
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto says TCP, and
    # without it every keep-alive response (headers and body written separately) waits ~40 ms for a
    # delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock


def wait_http_ok(url: str, timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll `url` until it answers 200; False when `timeout` passes first."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0, trust_env=False) as client:
        while True:
            try:
                if client.get(url).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)
