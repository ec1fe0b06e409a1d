"""Kopf's HTTP session, built as Kopf builds its own (kopf/_cogs/clients/auth.py), with two differences: its
User-Agent names this replica, and a write (any method but GET and HEAD) that the write gate refuses is
never sent: ``NotLeading`` is raised before the request leaves. Kopf's writes (its finalizer patches, the
Events it posts from a queue) thus stop the moment the lead is lost, as the operator's own do.
"""

from __future__ import annotations

import types

import aiohttp
import kopf

from controller.kube.client import NotLeading, WriteGate

__all__ = ["session_for"]

READ_METHODS = frozenset({"GET", "HEAD"})


def session_for(info: kopf.ConnectionInfo, *, agent: str, write_gate: WriteGate | None) -> kopf.AiohttpSession:
    tracing = aiohttp.TraceConfig()

    async def refuse_writes_when_not_leading(session: aiohttp.ClientSession, context: types.SimpleNamespace,
                                             params: aiohttp.TraceRequestStartParams) -> None:
        if params.method.upper() not in READ_METHODS and write_gate is not None and not write_gate():
            raise NotLeading(f"not sending {params.method} {params.url.path}: this replica does not hold the "
                             "leader Lease")

    tracing.on_request_start.append(refuse_writes_when_not_leading)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ssl=info.as_ssl_context()),
        headers={**info.as_http_headers(), "User-Agent": agent},
        proxy=info.proxy_url,
        trust_env=info.trust_env,
        trace_configs=[tracing],
    )
    return kopf.AiohttpSession(aiohttp_session=session, server=info.server, priority=info.priority,
                               default_namespace=info.default_namespace, expiration=info.expiration)
