"""``python -m cluster up|down|status|logs``: the real control plane for the tests (``make cluster``)."""

from __future__ import annotations

import argparse
import sys
import time

from cluster.controlplane import REPO, ControlPlane, ControlPlaneError, build_binaries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster", description=__doc__)
    parser.add_argument("command", choices=("build", "up", "down", "status", "logs"))
    parser.add_argument("--dir", help="state directory (default: .cluster/ in the repo, or $POOLPILOT_CLUSTER_DIR)")
    args = parser.parse_args(argv)
    plane = ControlPlane(args.dir)
    try:
        if args.command == "build":
            print(build_binaries())
        elif args.command == "up":
            started = time.monotonic()
            was_running = plane.running()
            if not was_running:
                bin_dir = build_binaries()
                started = time.monotonic()
                plane.start(bin_dir)
            where = plane.kubeconfig.relative_to(REPO) if plane.kubeconfig.is_relative_to(REPO) else plane.kubeconfig
            verb = "already running" if was_running else f"started in {time.monotonic() - started:.1f} s"
            print(f"control plane {verb}; export KUBECONFIG={where}")
        elif args.command == "down":
            plane.stop()
            print("control plane stopped")
        elif args.command == "status":
            running = plane.running()
            print("running" if running else "not running")
            return 0 if running else 1
        else:
            print(plane.logs())
    except ControlPlaneError as error:
        print(f"python -m cluster {args.command}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
