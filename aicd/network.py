"""Where a server may listen or a tool may send without authentication: this machine only."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """Whether `host` keeps traffic on this machine: `localhost`, 127.0.0.0/8 or ::1 as addresses (a name
    like `127.evil.example` is no address, and may resolve anywhere)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
