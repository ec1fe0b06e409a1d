"""Run the real operator (`poolpilot run`) as a local process against the API server a kubeconfig names.

The demo and the integration tests use it; so can a developer with a kind cluster.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

__all__ = ["OperatorProcess", "free_port", "running_operator"]

STARTUP_TIMEOUT_SECONDS = 30.0
# What the operator logs once its leader election has looked at the Lease (controller/leader.py).
_ELECTION_STARTED = re.compile(r"standing by: |became leader: ")
_IDENTITY = re.compile(r"leader election on Lease \S+ as (\S+) ")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class OperatorProcess:
    """`python -m controller.cli run`, its liveness probe, and its log (printed when a test fails).

    Leader election is on, as in a cluster, with the Lease in the first namespace watched (else ``default``)
    unless ``env`` says otherwise: each test's operators elect among themselves, on a shared cluster too.
    """

    def __init__(self, kubeconfig: str | os.PathLike[str], namespaces: list[str] | None = None, *,
                 env: dict[str, str] | None = None, default_liveness: bool = False,
                 probe_host: str = "127.0.0.1", verbose: bool = True) -> None:
        """``default_liveness``: serve the probe where the operator's settings put it by default (only the port
        is chosen here); otherwise on 127.0.0.1. ``probe_host``: where to wait for it to answer. ``verbose``:
        debug logging (for the tests' logs); off, the operator logs as in production (benchmarks of its CPU)."""
        self._kubeconfig = str(kubeconfig)
        self._extra_env = dict(env or {})
        self._namespaces = namespaces or []
        self._default_liveness = default_liveness
        self._probe_host = probe_host
        self._verbose = verbose
        self.liveness_port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log_dir = pathlib.Path(tempfile.mkdtemp(prefix="poolpilot-operator-"))
        self._starts = 0
        self.log_path = self._log_dir / "operator-0.log"

    def start(self, *, wait_until_live: bool = True) -> None:
        """Start it and wait until its liveness probe answers (a standby's does too: wait for "became leader" in
        its log to know it acts); ``wait_until_live=False``: until its leader election has looked at the Lease."""
        if self._process is not None:
            raise RuntimeError("the operator is already running")
        self.liveness_port = free_port()
        self.log_path = self._log_dir / f"operator-{self._starts}.log"
        self._starts += 1
        env = {**os.environ, "KUBECONFIG": self._kubeconfig, "POOLPILOT_REPORTING_INSTANCE": "poolpilot-test",
               "POOLPILOT_LEASE_NAMESPACE": (self._namespaces or ["default"])[0], **self._extra_env}
        args = [sys.executable, "-m", "controller.cli", "run", *(["--verbose"] if self._verbose else [])]
        if self._default_liveness:
            env["POOLPILOT_LIVENESS_PORT"] = str(self.liveness_port)
        else:
            args.append(f"--liveness=http://127.0.0.1:{self.liveness_port}/healthz")
        for namespace in self._namespaces:
            args += ["--namespace", namespace]
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        if wait_until_live:
            self._wait_until_live(self.probe_url(self._probe_host))
        else:
            self.wait_for_log(_ELECTION_STARTED, what="its leader election to look at the Lease")

    def probe_url(self, host: str) -> str:
        """The liveness probe's URL at ``host`` (an IP address)."""
        return f"http://[{host}]:{self.liveness_port}/healthz" if ":" in host else \
            f"http://{host}:{self.liveness_port}/healthz"

    def _wait_until_live(self, url: str) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"the operator exited with {self._process.returncode}:\n{self.log()}")
            with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError), \
                    urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"the operator did not become live in {STARTUP_TIMEOUT_SECONDS} s:\n{self.log()}")

    def wait_for_log(self, pattern: str | re.Pattern[str], *, timeout: float = STARTUP_TIMEOUT_SECONDS,
                     what: str = "a log line") -> re.Match[str]:
        """Wait until the current run's log matches ``pattern``."""
        wanted = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            found = wanted.search(self.log_path.read_text(errors="replace")) if self.log_path.exists() else None
            if found:
                return found
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"the operator exited with {self._process.returncode} before {what}:\n"
                                   f"{self.log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the operator did not log {what} in {timeout} s:\n{self.log()}")
            time.sleep(0.05)

    @property
    def identity(self) -> str:
        """The identity this run elects as (the pod name plus a random suffix), from its log."""
        return self.wait_for_log(_IDENTITY, what="its identity").group(1)

    def kill(self) -> int:
        """SIGKILL, as a node that dies or the OOM killer: no cleanup, no release of the Lease."""
        return self._end(signal.SIGKILL)

    def freeze(self) -> None:
        """SIGSTOP: the process stops where it is (a stalled VM, a long GC pause), its Lease unrenewed."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def wait(self, timeout: float) -> int:
        """Wait for it to exit by itself; returns the exit code."""
        if self._process is None:
            raise RuntimeError("the operator is not running")
        process = self._process
        code = process.wait(timeout=timeout)
        self._process = None
        return code

    @property
    def pid(self) -> int | None:
        """The operator's process id while it runs (its CPU and memory are in /proc/<pid>)."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> int:
        """SIGTERM, as the kubelet does; returns the exit code."""
        return self._end(signal.SIGTERM)

    def _end(self, signum: signal.Signals) -> int:
        if self._process is None:
            return 0
        process, self._process = self._process, None
        if process.poll() is not None:
            return process.returncode
        process.send_signal(signal.SIGCONT)  # a frozen process handles no SIGTERM
        process.send_signal(signum)
        try:
            return process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
            raise

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in sorted(self._log_dir.glob("*.log")))


@contextlib.contextmanager
def running_operator(kubeconfig: str | os.PathLike[str], namespaces: list[str] | None = None
                     ) -> Iterator[OperatorProcess]:
    operator = OperatorProcess(kubeconfig, namespaces)
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()
