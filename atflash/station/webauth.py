"""Who may read a station's page: where it listens and the token it asks for.

Pure: no server library here, so the command checks its ``--web`` address
and refuses an open bind before anything starts. A page bound to the
loopback interface is reachable from this machine only and needs no token;
any other address needs one, given as ``Authorization: Bearer TOKEN`` or as
``?token=TOKEN`` on the URL (a browser opening a link, and the page's own
requests: an ``EventSource`` cannot set headers).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping

from atflash.errors import InputError

LOCAL_NAMES = frozenset({"localhost", "ip6-localhost"})


DEFAULT_HOST = "127.0.0.1"  # a port alone binds here: this machine only


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6), or a port alone for localhost; an :class:`InputError` if not."""
    text = text.strip()
    host, sep, port = text.rpartition(":") if ":" in text else (DEFAULT_HOST, ":", text)
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--web {text!r} is not HOST:PORT", hint="e.g. --web 127.0.0.1:8080")
    return host, int(port)


def is_local(host: str) -> bool:
    """A loopback address or name: only this machine reaches it."""
    if host.lower() in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed(token: str | None, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
    """Whether a request may read the page: no token set, or the right one in header or query."""
    if not token:
        return True
    offered = [query.get("token", "")]
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        offered.append(auth[7:].strip())
    return any(hmac.compare_digest(given.encode(), token.encode()) for given in offered if given)
