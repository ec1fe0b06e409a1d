"""The router's settings, from its fixed command line (the operator renders exactly these flags).

    poolpilot router --namespace NS --pool NAME [--host ADDRESS] [--port 8080] --served-model MODEL
                     [--provider-url URL --provider-model MODEL] [--api-key-file PATH]
                     [--max-in-flight-per-replica 32] [--routers 1] [--max-body-bytes 4194304] [--kubeconfig PATH]

The API key is read from its file once, at start; it is kept out of ``repr`` so no log line can carry it.
"""

from __future__ import annotations

import argparse
import pathlib
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["InvalidRouterSettings", "RouterSettings", "add_router_arguments", "parse_router_command_line",
           "settings_from_arguments"]

# No flag: a request waiting in vLLM's queue, or a long non-streamed answer, sends no byte for minutes.
DEFAULT_UPSTREAM_IDLE_SECONDS = 600.0


class InvalidRouterSettings(Exception):
    """A flag's value the router cannot run with; the message says which and why."""


@dataclass(frozen=True)
class RouterSettings:
    namespace: str
    pool: str
    served_model: str
    port: int = 8080
    host: str | None = None  # every address, as in a pod
    provider_url: str | None = None  # ends in /v1: request paths join after it
    provider_model: str | None = None
    api_key: str | None = field(default=None, repr=False)
    max_in_flight_per_replica: int = 32
    routers: int = 1  # the routers sharing the pool's replicas: the status's per-replica budget is split over them
    max_body_bytes: int = 4 * 1024 * 1024
    kubeconfig: str | None = None
    pool_connect_seconds: float = 2.0
    provider_connect_seconds: float = 5.0  # across the internet, TLS included
    upstream_idle_seconds: float = DEFAULT_UPSTREAM_IDLE_SECONDS  # longest wait for the next byte

    @property
    def has_provider(self) -> bool:
        return self.provider_url is not None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return value


def add_router_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--namespace", required=True, help="the pool's namespace")
    parser.add_argument("--pool", required=True, help="the InferencePool's name")
    parser.add_argument("--host", default=None,
                        help="address to serve on (default: every address, as a pod does; one pod IP off-cluster)")
    parser.add_argument("--port", type=_port, default=8080, help="port to serve on (8080)")
    parser.add_argument("--served-model", required=True,
                        help="the model name clients send (the pool's served model name); others get a 404")
    parser.add_argument("--provider-url", default=None, help="the hosted OpenAI-compatible API's base URL (.../v1)")
    parser.add_argument("--provider-model", default=None, help="what the served model is called at the provider")
    parser.add_argument("--api-key-file", default=None,
                        help="file holding the provider's API key (the mounted Secret key), sent as a bearer token")
    parser.add_argument("--max-in-flight-per-replica", type=_positive_int, default=32,
                        help="in Overflow, pool requests in flight per ready replica beyond which requests spill (32)")
    parser.add_argument("--routers", type=_positive_int, default=1,
                        help="routers sharing the pool's replicas; each takes its share of the per-replica budget "
                             "the pool's status reports (status.fallback.inFlightPerReplica) (1)")
    parser.add_argument("--max-body-bytes", type=_positive_int, default=4 * 1024 * 1024,
                        help="largest request body accepted; larger ones get a 413 (4194304)")
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig path; default: in-cluster, or KUBECONFIG")


def settings_from_arguments(args: argparse.Namespace) -> RouterSettings:
    """Check the flags together and read the API key; ``InvalidRouterSettings`` names what is wrong."""
    for flag, value in (("--namespace", args.namespace), ("--pool", args.pool),
                        ("--served-model", args.served_model)):
        if not value.strip():
            raise InvalidRouterSettings(f"{flag} must not be empty")
    if (args.provider_url is None) != (args.provider_model is None):
        raise InvalidRouterSettings("--provider-url and --provider-model go together")
    if args.api_key_file is not None and args.provider_url is None:
        raise InvalidRouterSettings("--api-key-file needs --provider-url: the key is only ever sent to the provider")
    provider_url = None if args.provider_url is None else _provider_url(args.provider_url)
    api_key = None if args.api_key_file is None else _read_key(args.api_key_file)
    return RouterSettings(
        namespace=args.namespace, pool=args.pool, served_model=args.served_model, port=args.port, host=args.host,
        provider_url=provider_url, provider_model=args.provider_model, api_key=api_key,
        max_in_flight_per_replica=args.max_in_flight_per_replica, routers=args.routers,
        max_body_bytes=args.max_body_bytes,
        kubeconfig=args.kubeconfig,
    )


def parse_router_command_line(argv: Sequence[str]) -> RouterSettings:
    """The flags alone (without ``poolpilot router``); argparse exits on a malformed one, as the CLI does."""
    parser = argparse.ArgumentParser(prog="poolpilot router")
    add_router_arguments(parser)
    return settings_from_arguments(parser.parse_args(argv))


def _provider_url(text: str) -> str:
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InvalidRouterSettings(f"--provider-url {text!r} is not an http(s) URL with a host")
    if parsed.query or parsed.fragment or parsed.username or parsed.password:
        # Credentials belong in the key file: a URL is printed in places a key must never be.
        raise InvalidRouterSettings("--provider-url must not carry credentials, a query or a fragment")
    return text.rstrip("/")


def _read_key(path: str) -> str:
    try:
        text = pathlib.Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidRouterSettings(f"--api-key-file {path}: cannot read it ({type(e).__name__})") from None
    key = text.rstrip("\r\n")  # a Secret written with `echo` ends in a newline
    if not key:
        raise InvalidRouterSettings(f"--api-key-file {path} is empty")
    if any(ch.isspace() or not ch.isprintable() for ch in key):
        # Never quote it: the message goes to the log.
        raise InvalidRouterSettings(f"--api-key-file {path}: the key holds whitespace or control characters")
    return key
