"""URLs the operator builds or is given: a replica's address from its pod IP; a Prometheus URL in one spelling.

Pure (no I/O). An IPv6 address must be bracketed in a URL (``http://[fd00::5]:8000``); pasted bare,
``http://fd00::5:8000`` is not a URL at all. Prometheus URLs are compared (with the operator's allowed
list) and remembered in one spelling, so ``HTTP://Prom:80/`` is ``http://prom:80`` and not a second one.
"""

from __future__ import annotations

import ipaddress
import urllib.parse

__all__ = ["normalized_prometheus_url", "replica_metrics_base_url"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def replica_metrics_base_url(ip: str, port: int) -> str:
    """``http://IP:PORT`` for a pod IP, the IPv6 ones bracketed and in their compressed form."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        raise ValueError(f"{ip!r} is not a pod IP address") from None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:  # a link-local zone (fe80::1%eth0) is never a pod IP
            raise ValueError(f"{ip!r} is not a pod IP address (it has a zone)")
        return f"http://[{address}]:{port}"
    return f"http://{address}:{port}"


def normalized_prometheus_url(url: str) -> str:
    """``scheme://host:port[/path]``: scheme and host lowercased, the default port spelled out, no trailing
    slash. Userinfo is kept as written. ``ValueError`` for what is not an http(s) URL of a Prometheus API."""
    parts = urllib.parse.urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.netloc:
        raise ValueError(f"{url!r} is not an http(s) URL")
    if not parts.hostname:
        raise ValueError(f"{url!r} has no host")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r} has a query or fragment; a Prometheus base URL has neither")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"{url!r} has a port that is not a number from 1 to 65535")
    port = port or _DEFAULT_PORTS[scheme]
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    userinfo = parts.netloc.rpartition("@")[0]
    return f"{scheme}://{userinfo + '@' if userinfo else ''}{host}:{port}{parts.path.rstrip('/')}"
