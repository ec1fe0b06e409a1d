"""The router's HTTP side: an OpenAI-compatible front door that sends each request to a replica of the pool
or to the hosted API, and streams the answer back as it comes.

Only ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/models`` are served, and only to the view's
replicas and the configured provider: no path, header or Host of the client chooses another upstream.
The pool gets the client's body byte for byte; the API gets it with ``model`` renamed, the router's key as
the bearer token and none of the client's credentials. Of the upstream's headers only the content type and
Retry-After come back, with ``X-PoolPilot-Backend: pool|api`` saying who answered. Run it with
``server.make_runner``: a client that goes away cancels its handler, and with it the upstream request.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from yarl import URL

from controller.api.status import FallbackMode
from controller.router.metrics import BackendMetrics, RejectReason, RouterMetrics
from controller.router.picking import PoolLoad, Route, budget_per_replica, route, spill_after
from controller.router.settings import RouterSettings
from controller.router.view import ViewHolder

__all__ = ["METRICS_KEY", "RETRY_AFTER_SECONDS", "build_app", "usage_tokens"]

log = logging.getLogger(__name__)

METRICS_KEY = web.AppKey("metrics", RouterMetrics)
RETRY_AFTER_SECONDS = "1"
_USAGE_KEY = b'"usage":'
_STREAM_TAIL_BYTES = 8192  # the usage chunk comes last, just before [DONE]
_JSON = "application/json"
_MAX_CACHED_URLS = 4096
_decoder = json.JSONDecoder()


def build_app(settings: RouterSettings, holder: ViewHolder) -> web.Application:
    router = _Router(settings, holder)
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[METRICS_KEY] = router.metrics
    app.cleanup_ctx.append(router.session_context)
    app.router.add_post("/v1/chat/completions", router.complete)
    app.router.add_post("/v1/completions", router.complete)
    app.router.add_get("/v1/models", router.models)
    app.router.add_get("/metrics", router.metrics_page)
    app.router.add_get("/healthz", _healthy)
    app.router.add_get("/readyz", router.ready)
    app.router.add_route("*", "/{tail:.*}", _not_found)  # every other path: OpenAI's 404, never forwarded
    return app


class _Router:
    def __init__(self, settings: RouterSettings, holder: ViewHolder) -> None:
        self.settings = settings
        self.holder = holder
        self.metrics = RouterMetrics()
        self.load = PoolLoad()
        self.urls: dict[str, URL] = {}  # parsed once: replica + path -> URL
        self.session: aiohttp.ClientSession | None = None
        self.pool_timeout = aiohttp.ClientTimeout(total=None, sock_connect=settings.pool_connect_seconds,
                                                  sock_read=settings.upstream_idle_seconds)
        self.api_timeout = aiohttp.ClientTimeout(total=None, sock_connect=settings.provider_connect_seconds,
                                                 sock_read=settings.upstream_idle_seconds)
        self.pool_headers = {"Content-Type": _JSON}
        self.api_headers = {"Content-Type": _JSON}
        self.secret: bytes | None = None
        if settings.api_key is not None:
            self.api_headers["Authorization"] = f"Bearer {settings.api_key}"
            self.secret = settings.api_key.encode()
        self.models_body = json.dumps({"object": "list", "data": [{
            "id": settings.served_model, "object": "model", "created": int(time.time()), "owned_by": "poolpilot",
        }]}).encode()

    async def session_context(self, app: web.Application) -> AsyncIterator[None]:
        # One session for the app's life: keep-alive connections to every replica and the provider.
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60.0)
        self.session = aiohttp.ClientSession(connector=connector, trust_env=False)
        try:
            yield
        finally:
            await self.session.close()

    # --- the small endpoints ----------------------------------------------------------------

    async def models(self, request: web.Request) -> web.Response:
        return web.Response(body=self.models_body, content_type=_JSON)

    async def metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def ready(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.holder.view.known else 503)

    # --- completions ------------------------------------------------------------------------

    async def complete(self, request: web.Request) -> web.StreamResponse:
        arrived = time.perf_counter()
        body = await self._read_body(request)
        if isinstance(body, web.Response):
            return body
        try:
            document = json.loads(body)
        except ValueError:
            return self._reject("bad_request", 400, "The request body is not valid JSON.")
        if not isinstance(document, dict):
            return self._reject("bad_request", 400, "The request body must be a JSON object.")
        model = document.get("model")
        if not isinstance(model, str) or not model:
            return self._reject("bad_request", 400, "You must provide a model parameter.", param="model")
        if model != self.settings.served_model:
            return self._reject("unknown_model", 404, f"The model `{model[:200]}` does not exist.",
                                param="model", code="model_not_found")

        view = self.holder.view
        settings = self.settings
        budget = budget_per_replica(settings.max_in_flight_per_replica, view.in_flight_per_replica,
                                    routers=settings.routers)
        choice = route(view.mode, view.replicas, self.load, budget_per_replica=budget,
                       has_provider=settings.has_provider)
        if choice.backend == "pool":
            assert choice.replica is not None
            answer = await self._to_pool(request, choice.replica, body, arrived, view.mode)
            if isinstance(answer, web.StreamResponse):
                return answer
            choice = answer
        if choice.backend == "api":
            assert choice.reason is not None
            self.metrics.spills[choice.reason].inc()
            return await self._to_api(request, document, arrived)
        return self._unavailable("No replica of the pool is serving. Please try again later.")

    async def _read_body(self, request: web.Request) -> bytes | web.Response:
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return self._too_large()
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:  # a chunked body that grew past the limit
            return self._too_large()

    async def _to_pool(self, request: web.Request, replica: str, body: bytes, arrived: float,
                       mode: FallbackMode) -> web.StreamResponse | Route:
        """The pool's answer relayed, or the API route when the pool cannot take it (Overflow only)."""
        metrics = self.metrics.pool
        assert self.session is not None
        headers = self.pool_headers
        authorization = request.headers.get("Authorization")
        if authorization is not None:  # the client's credential stays within its own pool
            headers = {**headers, "Authorization": authorization}
        self.load.started(replica)
        metrics.in_flight.inc()
        try:
            try:
                upstream = await self.session.post(self._url(replica + request.path), data=body, headers=headers,
                                                   timeout=self.pool_timeout)
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as e:
                metrics.error.inc()
                log.warning("replica %s took no connection: %s", replica, type(e).__name__)
                spill = spill_after(mode, has_provider=self.settings.has_provider, status=None)
                return spill or self._unavailable("The pool refused the connection. Please try again later.")
            except (aiohttp.ClientError, TimeoutError) as e:
                metrics.error.inc()
                log.warning("replica %s failed before answering: %s", replica, type(e).__name__)
                return self._upstream_failed(e)
            if upstream.status in (429, 503):
                spill = spill_after(mode, has_provider=self.settings.has_provider, status=upstream.status)
                if spill is not None:
                    metrics.error.inc()
                    await _discard(upstream)
                    return spill
            return await self._relay(request, upstream, metrics, arrived, backend="pool")
        finally:
            metrics.in_flight.dec()
            self.load.finished(replica)

    def _url(self, text: str) -> URL:
        url = self.urls.get(text)
        if url is None:
            if len(self.urls) >= _MAX_CACHED_URLS:  # replicas come and go: forget the old ones now and then
                self.urls.clear()
            url = self.urls[text] = URL(text)
        return url

    async def _to_api(self, request: web.Request, document: dict[str, Any], arrived: float) -> web.StreamResponse:
        metrics = self.metrics.api
        settings = self.settings
        assert self.session is not None and settings.provider_url is not None
        document["model"] = settings.provider_model
        body = json.dumps(document, separators=(",", ":")).encode()
        url = self._url(settings.provider_url + request.path[len("/v1"):])
        metrics.in_flight.inc()
        try:
            try:
                upstream = await self.session.post(url, data=body, headers=self.api_headers, timeout=self.api_timeout)
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as e:
                metrics.error.inc()
                log.warning("the API took no connection: %s", type(e).__name__)
                return self._unavailable("Neither the pool nor the API can take the request. Please try again later.")
            except (aiohttp.ClientError, TimeoutError) as e:
                metrics.error.inc()
                log.warning("the API failed before answering: %s", type(e).__name__)
                return self._upstream_failed(e)
            return await self._relay(request, upstream, metrics, arrived, backend="api")
        finally:
            metrics.in_flight.dec()

    async def _relay(self, request: web.Request, upstream: aiohttp.ClientResponse, metrics: BackendMetrics,
                     arrived: float, *, backend: str) -> web.StreamResponse:
        """The upstream's status and body, and of its headers only the content type and Retry-After."""
        status = upstream.status
        content_type = upstream.headers.get("Content-Type", _JSON)
        headers = {"Content-Type": content_type, "X-PoolPilot-Backend": backend}
        retry_after = upstream.headers.get("Retry-After")
        if retry_after is not None or status in (429, 503):
            headers["Retry-After"] = retry_after or RETRY_AFTER_SECONDS
        if content_type.startswith("text/event-stream"):
            return await self._stream(request, upstream, metrics, arrived, status, headers)
        try:
            payload = await upstream.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            upstream.close()
            metrics.error.inc()
            log.warning("%s failed while answering: %s", backend, type(e).__name__)
            return self._upstream_failed(e)
        except BaseException:  # the client went away (cancelled): the upstream connection goes with it
            upstream.close()
            metrics.error.inc()
            raise
        upstream.release()
        if self.secret is not None and backend == "api":
            payload = payload.replace(self.secret, b"[redacted]")  # a provider's error may quote the key
        (metrics.ok if status < 400 else metrics.error).inc()
        if status < 400:
            _count_tokens(metrics, payload)
        elapsed = time.perf_counter() - arrived
        metrics.time_to_first_byte.observe(elapsed)
        metrics.duration.observe(elapsed)
        return web.Response(body=payload, status=status, headers=headers)

    async def _stream(self, request: web.Request, upstream: aiohttp.ClientResponse, metrics: BackendMetrics,
                      arrived: float, status: int, headers: Mapping[str, str]) -> web.StreamResponse:
        """Server-Sent Events through as they arrive, each read written on at once (no buffering)."""
        response = web.StreamResponse(status=status, headers=headers)
        tail = bytearray()
        try:
            await response.prepare(request)
            first = True
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
                if first:
                    metrics.time_to_first_byte.observe(time.perf_counter() - arrived)
                    first = False
                tail += chunk
                if len(tail) > 2 * _STREAM_TAIL_BYTES:
                    del tail[:-_STREAM_TAIL_BYTES]
            await response.write_eof()
        except ConnectionResetError:  # the client went away: so does the upstream request
            upstream.close()
            metrics.error.inc()
            return response
        except (aiohttp.ClientError, TimeoutError) as e:
            # Bytes went out already: the stream cannot become an error answer nor move; cut it, as the upstream did.
            upstream.close()
            metrics.error.inc()
            log.warning("stream from %s broke off: %s", headers["X-PoolPilot-Backend"], type(e).__name__)
            if request.transport is not None:
                request.transport.close()
            return response
        except BaseException:  # the handler cancelled (the client went away while nothing came): cancel upstream
            upstream.close()
            metrics.error.inc()
            raise
        upstream.release()
        metrics.ok.inc()
        metrics.duration.observe(time.perf_counter() - arrived)
        _count_tokens(metrics, bytes(tail))
        return response

    # --- answers of the router's own ----------------------------------------------------------

    def _reject(self, reason: RejectReason, status: int, message: str, *, param: str | None = None,
                code: str | None = None, retry: bool = False) -> web.Response:
        self.metrics.rejected[reason].inc()
        return _error(status, message, param=param, code=code, retry=retry)

    def _too_large(self) -> web.Response:
        return self._reject("body_too_large", 413,
                            f"The request body is larger than {self.settings.max_body_bytes} bytes.")

    def _unavailable(self, message: str) -> web.Response:
        return self._reject("unavailable", 503, message, code="service_unavailable", retry=True)

    def _upstream_failed(self, error: BaseException) -> web.Response:
        if isinstance(error, TimeoutError):
            return _error(504, "The upstream sent nothing for too long.", code="upstream_timeout", retry=True)
        return _error(502, "The upstream broke off the answer.", code="upstream_error", retry=True)


def _error(status: int, message: str, *, param: str | None = None, code: str | None = None,
           retry: bool = False) -> web.Response:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = json.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}}).encode()
    headers = {"Retry-After": RETRY_AFTER_SECONDS} if retry else None
    return web.Response(body=body, status=status, content_type=_JSON, headers=headers)


async def _discard(upstream: aiohttp.ClientResponse) -> None:
    """Read a refusal's (small) body, so its connection goes back to the pool of kept-alive ones."""
    try:
        await upstream.read()
    except (aiohttp.ClientError, TimeoutError):
        upstream.close()
        return
    except BaseException:
        upstream.close()
        raise
    upstream.release()


def usage_tokens(payload: bytes) -> tuple[int, int] | None:
    """Prompt and completion tokens from the last ``"usage"`` object in an answer or a stream's tail.

    A ``"usage":`` with the quotes bare can only be a key: inside a JSON string they are escaped. Only that
    object is parsed, not the whole answer.
    """
    at = payload.rfind(_USAGE_KEY)
    if at < 0:
        return None
    try:
        usage, _end = _decoder.raw_decode(payload[at + len(_USAGE_KEY):].decode().lstrip())
    except ValueError:  # null, cut short, or not UTF-8
        return None
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int) or prompt < 0 or completion < 0:
        return None
    return prompt, completion


def _count_tokens(metrics: BackendMetrics, payload: bytes) -> None:
    tokens = usage_tokens(payload)
    if tokens is not None:
        metrics.prompt_tokens.inc(tokens[0])
        metrics.generation_tokens.inc(tokens[1])


async def _healthy(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def _not_found(request: web.Request) -> web.Response:
    return _error(404, "Unknown path: the router serves /v1/chat/completions, /v1/completions and /v1/models.",
                  code="not_found")

