"""The rendezvous endpoint ``HOST:PORT``: its shape (pure) and whether its host resolves.

torchrun takes any string and fails inside its agent ("The port number ... must be an
integer between 0 and 65536") or waits out the whole timeout on a name that never
resolves; both then look like "node 1 never arrived". Checked here, before any launch.
"""

from __future__ import annotations

import socket

from devcheck.probe.deadline import Job, run_job


def split_endpoint(endpoint: str) -> tuple[str, str]:
    """``"[::1]:29400"`` -> ``("::1", "29400")``; the port is whatever follows the last colon."""
    host, _, port = endpoint.strip().rpartition(":")
    return host.strip("[]"), port


def endpoint_problem(endpoint: str) -> str | None:
    """What is wrong with the shape of ``endpoint``, or None."""
    if ":" not in endpoint:
        return f"{endpoint!r} has no port (expected HOST:PORT, e.g. 10.0.0.1:29400)"
    host, port = split_endpoint(endpoint)
    if not host:
        return f"{endpoint!r} has no host (expected HOST:PORT, e.g. 10.0.0.1:29400)"
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"{endpoint!r}: the port {port!r} is not a number in 1..65535 (e.g. 29400)"
    return None


def resolve_error(endpoint: str, timeout_s: float = 3.0) -> str | None:
    """None when the host resolves; otherwise why not (a slow resolver counts as a failure
    after ``timeout_s``, reported as such, so a dead DNS costs seconds, not the timeout)."""
    host, port = split_endpoint(endpoint)

    def lookup() -> str | None:
        try:
            socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except (OSError, ValueError, UnicodeError) as exc:
            return f"{host!r} does not resolve ({getattr(exc, 'strerror', None) or exc})"
        return None

    return run_job(Job("name lookup", lookup, lambda _why: (
        f"the name lookup of {host!r} did not answer within {timeout_s:g} s")), timeout_s)
