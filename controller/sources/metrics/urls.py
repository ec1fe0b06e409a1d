"""URLs the operator builds or is given: a replica's address from its pod IP; a Prometheus URL in one spelling.

Pure (no I/O). An IPv6 address must be bracketed in a URL (``http://[fd00::5]:8000``); pasted bare,
``http://fd00::5:8000`` is not a URL at all.
"""

from __future__ import annotations

import ipaddress

__all__ = ["replica_metrics_base_url"]


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
