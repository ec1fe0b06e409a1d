"""Run the real ``prometheus`` binary for tests and benchmarks.

The Prometheus metrics source is only as right as its PromQL, and PromQL semantics
(``or`` matching, staleness markers, ``timestamp()``, NaN propagation, escaping) are
best checked against the real engine rather than a mock of it. This starts the
Debian package's ``prometheus`` (or ``$POOLPILOT_PROMETHEUS_BINARY``) on 127.0.0.1 with a
temporary config and TSDB, scraping targets listed in a ``file_sd_configs`` JSON file
that tests rewrite (atomically) to add and remove replicas::

    with PrometheusServer(scrape_interval_seconds=1) as prom:
        prom.set_targets([ScrapeTarget("127.0.0.2:8000", {"namespace": "llm", "poolpilot_io_pool": "chat"})])
        prom.wait_for_samples("vllm:num_requests_waiting", timeout=15)
        prom.query("sum(vllm:num_requests_waiting)")

More jobs (``extra_scrape_configs``, e.g. manifests/monitoring/scrape-configs.yaml with file-based discovery
in place of Kubernetes') and rule files (``rule_files``) can be added to the config.

Every query is also written to Prometheus' own query log (``queries_logged()``), and its
own ``/metrics`` counts API requests (``api_query_count()``), so a test can count what a
source asked without trusting the source. A missing binary raises :class:`PrometheusNotInstalled`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["PrometheusNotInstalled", "PrometheusServer", "PrometheusStartError", "ScrapeTarget"]

BINARY_ENV = "POOLPILOT_PROMETHEUS_BINARY"
_START_ATTEMPTS = 3  # a free port can be taken between choosing it and Prometheus binding it
_POLL_SECONDS = 0.1
_HTTP_TIMEOUT = 5.0
# No proxies for loopback, whatever HTTP_PROXY says.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# Servers still running when the interpreter exits (a test run interrupted with ^C, a forgotten stop())
# are stopped then, so no prometheus process outlives the tests holding a port and a temp dir.
_RUNNING: set[PrometheusServer] = set()  # strong references: a dropped server is still stopped at exit


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_RUNNING):
        server.stop()


class PrometheusNotInstalled(RuntimeError):
    pass


class PrometheusStartError(RuntimeError):
    pass


@dataclass(frozen=True)
class ScrapeTarget:
    """One ``host:port`` to scrape, with the target labels Prometheus attaches to its series."""

    address: str
    labels: Mapping[str, str] = field(default_factory=dict)


def find_binary() -> str:
    configured = os.environ.get(BINARY_ENV)
    binary = configured or shutil.which("prometheus")
    if binary is None or not os.access(binary, os.X_OK):
        raise PrometheusNotInstalled(
            f"the prometheus server binary was not found ({BINARY_ENV}={configured!r}, nothing named 'prometheus' "
            f"on PATH). Install the Debian package: `sudo apt-get install prometheus` (`make prometheus` does it "
            f"when run as root), or point {BINARY_ENV} at a Prometheus 2.x binary."
        )
    return binary


def _duration(seconds: float) -> str:
    """Prometheus duration syntax, to the millisecond ('1s', '500ms')."""
    millis = round(seconds * 1000)
    if millis <= 0:
        raise ValueError(f"a Prometheus duration must be positive, got {seconds} s")
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrometheusServer:
    """A real Prometheus on 127.0.0.1:<free port> with a temporary config and TSDB. Synchronous."""

    def __init__(self, *, scrape_interval_seconds: float = 1.0, evaluation_interval_seconds: float | None = None,
                 scrape_timeout_seconds: float | None = None, job_name: str = "vllm",
                 startup_timeout_seconds: float = 30.0, extra_args: Sequence[str] = (),
                 extra_scrape_configs: Sequence[Mapping[str, Any]] = (), rule_files: Sequence[str | Path] = ()) -> None:
        self.scrape_interval_seconds = scrape_interval_seconds
        self.evaluation_interval_seconds = evaluation_interval_seconds or scrape_interval_seconds
        # Prometheus refuses a scrape timeout longer than the interval (its default is 10 s).
        self.scrape_timeout_seconds = min(scrape_timeout_seconds or 10.0, scrape_interval_seconds)
        self.job_name = job_name
        self.startup_timeout_seconds = startup_timeout_seconds
        self.extra_args = tuple(extra_args)
        self.extra_scrape_configs = [dict(job) for job in extra_scrape_configs]
        self.rule_files = [str(path) for path in rule_files]
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("Prometheus is not running")
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def directory(self) -> Path:
        if self._dir is None:
            raise RuntimeError("Prometheus was not started")
        return self._dir

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        binary = find_binary()  # before anything else: the clearest failure comes first
        if self._process is not None:
            raise RuntimeError("Prometheus is already running")
        self._dir = Path(tempfile.mkdtemp(prefix="poolpilot-prometheus-"))
        self._write_targets([])
        self._write_config()
        last_error: PrometheusStartError | None = None
        for _attempt in range(_START_ATTEMPTS):
            try:
                self._start_once(binary)
                return
            except PrometheusStartError as e:
                last_error = e
                if "address already in use" not in str(e):
                    break
        self._cleanup_dir()
        assert last_error is not None
        raise last_error

    def _start_once(self, binary: str, port: int | None = None) -> None:
        directory = self.directory
        self.port = port or _free_port()
        log = (directory / "prometheus.log").open("ab")
        try:
            self._process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={directory / 'prometheus.yml'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    "--log.level=warn",
                    *self.extra_args,
                ],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=directory,
            )
        finally:
            log.close()
        deadline = time.monotonic() + self.startup_timeout_seconds
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                raise PrometheusStartError(f"prometheus exited at startup:\n{self.log_tail()}")
            if self._get("/-/ready", quiet=True) == 200:
                _RUNNING.add(self)
                return
            time.sleep(_POLL_SECONDS)
        self._kill()
        raise PrometheusStartError(
            f"prometheus was not ready within {self.startup_timeout_seconds} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; removes the temporary directory. Idempotent."""
        self._kill(timeout)
        self._cleanup_dir()

    def pause(self, timeout: float = 10.0) -> None:
        """Stop the process but keep its directory (config, TSDB) so ``resume`` restarts it on the same port."""
        self._kill(timeout)

    def resume(self) -> None:
        """Start a paused Prometheus again, on the same port and TSDB."""
        if not self.running:
            self._start_once(find_binary(), port=self.port)

    def _kill(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        _RUNNING.discard(self)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def _cleanup_dir(self) -> None:
        directory, self._dir = self._dir, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        path = self.directory / "prometheus.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])

    # --- configuration --------------------------------------------------------------------

    def _write_config(self) -> None:
        directory = self.directory
        # JSON is YAML: no YAML library needed, and no quoting surprises.
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": _duration(self.scrape_interval_seconds),
                "scrape_timeout": _duration(self.scrape_timeout_seconds),
                "evaluation_interval": _duration(self.evaluation_interval_seconds),
                "query_log_file": str(directory / "queries.log"),
            },
            "scrape_configs": [{
                "job_name": self.job_name,
                "metrics_path": "/metrics",
                "file_sd_configs": [{
                    "files": [str(directory / "targets.json")],
                    "refresh_interval": _duration(max(self.scrape_interval_seconds, 1.0)),
                }],
            }, *self.extra_scrape_configs],
        }
        if self.rule_files:
            config["rule_files"] = self.rule_files
        (directory / "prometheus.yml").write_text(json.dumps(config, indent=2), encoding="utf-8")

    def set_targets(self, targets: Sequence[ScrapeTarget]) -> None:
        """Replace the scraped targets (Prometheus notices within about a second)."""
        self._write_targets(targets)

    def _write_targets(self, targets: Sequence[ScrapeTarget]) -> None:
        groups = [{"targets": [target.address], "labels": dict(target.labels)} for target in targets]
        path = self.directory / "targets.json"
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(groups, indent=1), encoding="utf-8")
        os.replace(temporary, path)  # atomic: Prometheus never reads half a file

    # --- reading --------------------------------------------------------------------------

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query; the ``result`` list. Raises on an error status."""
        body = self._get_json("/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def series(self, match: str) -> list[dict[str, str]]:
        """The label sets of the series a selector matches (``/api/v1/series``)."""
        body = self._get_json("/api/v1/series?" + urllib.parse.urlencode({"match[]": match}))
        data: list[dict[str, str]] = body["data"]
        return data

    def wait_for_samples(self, promql: str, timeout: float = 15.0, *, min_series: int = 1) -> list[dict[str, Any]]:
        """Poll an instant query until it returns at least ``min_series`` series."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(promql)
            if len(result) >= min_series:
                return result
            time.sleep(_POLL_SECONDS)
        raise TimeoutError(f"{promql!r} had {len(result)} series after {timeout} s, wanted {min_series}; "
                           f"targets: {self.target_health()}")

    def target_health(self) -> list[tuple[str, str, str]]:
        """(address, health, last error) of each active target."""
        body = self._get_json("/api/v1/targets?state=active")
        return [(t["scrapeUrl"], t["health"], t["lastError"]) for t in body["data"]["activeTargets"]]

    def get_api(self, path: str) -> dict[str, Any]:
        """A GET of Prometheus' HTTP API (``/api/v1/...``): the decoded body. Raises on an error status."""
        return self._get_json(path)

    def api_query_count(self) -> int:
        """Instant queries Prometheus has answered (its own prometheus_http_requests_total for /api/v1/query)."""
        with _OPENER.open(self.url + "/metrics", timeout=_HTTP_TIMEOUT) as response:
            text = response.read().decode()
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (sample.name == "prometheus_http_requests_total"
                        and sample.labels.get("handler") == "/api/v1/query"):
                    total += sample.value
        return int(total)

    def queries_logged(self) -> list[str]:
        """Every PromQL query Prometheus has evaluated so far, from its query log, oldest first."""
        path = self.directory / "queries.log"
        if not path.exists():
            return []
        queries = []
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                queries.append(str(json.loads(line)["params"]["query"]))
        return queries

    def _get_json(self, path: str) -> dict[str, Any]:
        try:
            with _OPENER.open(self.url + path, timeout=_HTTP_TIMEOUT) as response:
                body: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"Prometheus answered {e.code} to {path}: {e.read()!r}") from e
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus answered {body} to {path}")
        return body

    def _get(self, path: str, *, quiet: bool = False) -> int | None:
        try:
            with _OPENER.open(self.url + path, timeout=_HTTP_TIMEOUT) as response:
                status: int = response.status
                return status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            if quiet:
                return None
            raise
