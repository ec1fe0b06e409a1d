"""The ``poolpilot`` command: ``run`` the operator, a pool's ``router``, print the ``crd``, show one replica's
``signals``, ``explain-notice`` (what PoolPilot makes of one interruption notice), ``simulate`` a pool on a
trace against the baselines, or ``size`` one replica before buying."""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from controller.router.settings import add_router_arguments

if TYPE_CHECKING:
    from controller.leader import LeaderElector
    from controller.router.settings import RouterSettings
    from controller.settings import OperatorSettings

__all__ = ["main"]


def _run(args: argparse.Namespace) -> int:
    import asyncio

    import controller.handlers  # noqa: F401  # registers the handlers with Kopf
    from controller.settings import InvalidSettings, load_operator_settings
    from controller.telemetry.logs import configure_logging

    try:
        settings = load_operator_settings()
    except InvalidSettings as e:
        print(f"poolpilot: {e}", file=sys.stderr)
        return 2
    configure_logging(args.log_format or settings.log_format, verbose=args.verbose)
    if not args.verbose:
        # Kopf logs every handler call at INFO: thousands of lines an hour per pool. Keep warnings.
        for noisy in ("kopf.objects", "kopf.activities.probe", "aiohttp.access"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    namespaces = args.namespace or settings.namespaces
    return asyncio.run(_operate(settings, namespaces, args.liveness or settings.liveness_url()))


async def _operate(settings: OperatorSettings, namespaces: list[str], liveness_url: str) -> int:
    """Serve /healthz and /metrics on either role, and run Kopf with PoolPilot's handlers while this replica
    leads (controller/leadership.py), or at once without leader election, until it stops."""
    import asyncio

    import kopf
    from prometheus_client import REGISTRY

    from controller.leadership import Leadership, new_identity, run_when_leading
    from controller.telemetry.metrics import OPERATOR
    from controller.telemetry.server import HealthReport, OperatorHttpServer

    identity = new_identity(settings.reporting_instance)
    role = "standby" if settings.leader_election else "single"

    def health() -> HealthReport:
        return HealthReport(role=role, pools=int(REGISTRY.get_sample_value("poolpilot_pools") or 0))

    def on_role(leading: bool) -> None:
        nonlocal role
        role = "leader" if leading else "standby"
        OPERATOR.leader.set(1 if leading else 0)

    server = OperatorHttpServer(liveness_url, health)
    await server.start()
    try:
        if not settings.leader_election:
            OPERATOR.leader.set(1)
            await kopf.operator(
                standalone=True,  # no Kopf peering: one replica acts
                clusterwide=not namespaces,
                namespaces=namespaces,
                memo=kopf.Memo(leadership=Leadership(identity=identity)),
            )
            return 0
        elector = _elector(settings, identity)
        leadership = Leadership(identity=identity, write_gate=elector.is_leading)

        async def run_operator(stop_flag: asyncio.Event) -> None:
            await kopf.operator(standalone=True,  # no Kopf peering: the Lease decides who acts
                                clusterwide=not namespaces, namespaces=namespaces, stop_flag=stop_flag,
                                memo=kopf.Memo(leadership=leadership, stop_flag=stop_flag))

        return await run_when_leading(elector, run_operator, on_role=on_role)
    finally:
        OPERATOR.leader.set(0)
        await server.stop()


def _elector(settings: OperatorSettings, identity: str) -> LeaderElector:
    from controller.kube.client import build_api_client, user_agent
    from controller.kube.lease import LeaseApi
    from controller.leader import ElectionTimings, LeaderElector

    leases = LeaseApi(build_api_client(settings.kubeconfig, agent=user_agent(identity)),
                      settings.lease_namespace_or_default(), settings.lease_name)
    timings = ElectionTimings(lease_duration_seconds=settings.lease_duration_seconds,
                              renew_deadline_seconds=settings.lease_renew_deadline_seconds,
                              retry_period_seconds=settings.lease_retry_period_seconds)
    return LeaderElector(leases, identity, timings)


def _router(args: argparse.Namespace) -> int:
    import asyncio

    from controller.router.settings import InvalidRouterSettings, settings_from_arguments

    try:
        settings = settings_from_arguments(args)
    except InvalidRouterSettings as e:
        print(f"poolpilot router: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_serve_router(settings))


async def _serve_router(settings: RouterSettings) -> int:
    from controller.kube.client import build_api_client
    from controller.router.discovery import discover
    from controller.router.proxy import build_app
    from controller.router.server import serve
    from controller.router.view import ViewHolder

    holder = ViewHolder()
    api_client = build_api_client(settings.kubeconfig)
    try:
        return await serve(build_app(settings, holder), settings.port,
                           discover(settings.namespace, settings.pool, holder, api_client=api_client),
                           host=settings.host)
    finally:
        api_client.close()


def _crd(args: argparse.Namespace) -> int:
    from controller.api.crd import render_crd_yaml

    text = render_crd_yaml()
    if args.output == "-":
        sys.stdout.write(text)
    else:
        pathlib.Path(args.output).write_text(text)
    return 0


def _signals(args: argparse.Namespace) -> int:
    from controller.sources.metrics.replica_report import (
        DEFAULT_TTFT_PERCENTILE,
        SignalsUnavailable,
        describe_reading,
        read_replica,
        reading_as_json,
    )

    try:
        reading = read_replica(args.source, timeout_seconds=args.timeout)
    except SignalsUnavailable as e:
        print(f"poolpilot signals: {e}", file=sys.stderr)
        return 1
    percentile = DEFAULT_TTFT_PERCENTILE if args.ttft_percentile is None else args.ttft_percentile
    print(json.dumps(reading_as_json(reading, percentile)) if args.json else describe_reading(reading, percentile))
    return 0


def _explain_notice(args: argparse.Namespace) -> int:
    from controller.sources.interruptions.explain import describe, explain_text

    try:
        text = sys.stdin.read() if args.source == "-" else pathlib.Path(args.source).read_text()
    except (OSError, UnicodeDecodeError) as e:
        print(f"poolpilot explain-notice: cannot read {args.source}: {e}", file=sys.stderr)
        return 1
    result = explain_text(text)
    if args.json:
        objects = result.as_json()
        print(json.dumps(objects[0] if len(objects) == 1 else objects))
    else:
        print(describe(result))
    return 0


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _percentile(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentile (above 0, up to 100)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="poolpilot", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the operator (in a cluster, or against KUBECONFIG)")
    run.add_argument("--namespace", "-n", action="append", default=[],
                     help="watch only this namespace (repeatable); default: all namespaces")
    run.add_argument("--liveness", default=None,
                     help="liveness endpoint (and /metrics on its port), e.g. http://[::]:8080/healthz; default: "
                          "POOLPILOT_LIVENESS_ENDPOINT, "
                          "or every address of the pod's IP family (POOLPILOT_POD_IP) on port 8080")
    run.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    run.add_argument("--log-format", choices=("text", "json"), default=None,
                     help="text, or one JSON object per line; default: POOLPILOT_LOG_FORMAT, else text")
    run.set_defaults(handler=_run)

    router = commands.add_parser(
        "router", help="a pool's OpenAI-compatible front door: its replicas first, the hosted API for the rest")
    add_router_arguments(router)
    router.set_defaults(handler=_router)

    crd = commands.add_parser("crd", help="print the InferencePool CRD generated from the API models")
    crd.add_argument("--output", "-o", default="-", help="file to write; - for stdout")
    crd.set_defaults(handler=_crd)

    signals = commands.add_parser(
        "signals", help="what PoolPilot reads from one replica: queue depth, running requests, KV-cache use, "
                        "token counters, the TTFT percentile")
    signals.add_argument("source", help="a replica's metrics URL (http://10.1.2.3:8000/metrics), a file, "
                                        "or - for stdin")
    signals.add_argument("--json", action="store_true",
                         help='print {"queueDepth": ..., "runningRequests": ..., "kvCacheUtilization": ..., '
                              '"promptTokensTotal": ..., "generationTokensTotal": ..., "ttftPercentile": ..., '
                              '"ttftSeconds": ..., "ttftRequestsTotal": ...}, null for what the text lacks')
    signals.add_argument("--timeout", type=_positive_seconds, default=5.0, help="seconds, for a URL (5)")
    signals.add_argument("--ttft-percentile", type=_percentile, default=None,
                         help="the TTFT percentile to show, over the replica's life (spec.slo's default, 95)")
    signals.set_defaults(handler=_signals)

    explain = commands.add_parser(
        "explain-notice", help="what PoolPilot makes of one interruption notice: an SQS message body "
                               "(EventBridge, or SNS-wrapped), a Node or a Pod, as JSON or YAML")
    explain.add_argument("source", help="a file, or - for stdin")
    explain.add_argument("--json", action="store_true",
                         help='print {"result": "notice"|"ignored"|"rejected", "kind", "instanceId", "node", '
                              '"deadline", "reason"} (a list when one event names several instances)')
    explain.set_defaults(handler=_explain_notice)

    from controller.sim.cli import add_simulate_arguments, add_size_arguments

    add_simulate_arguments(commands.add_parser(
        "simulate", help="what this pool would do and cost on a trace, against the baselines and a hindsight oracle"))
    add_size_arguments(commands.add_parser(
        "size", help="what one replica of this pool's model holds on its GPU, serves and costs, before you buy"))

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
