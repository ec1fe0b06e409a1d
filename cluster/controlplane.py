"""Start and stop a real Kubernetes control plane on 127.0.0.1, from binaries ``build.sh`` made.

etcd, kube-apiserver, kube-controller-manager (all its default controllers: Deployment,
ReplicaSet, EndpointSlice, disruption, garbage collector, namespace, service account, node
lifecycle, ...), kube-scheduler and KWOK run as processes of their own, started in a new
session so they outlive the command that started them; their pids, ports and logs live in
the state directory (``.cluster/`` in the repo unless told otherwise), with ``kubeconfig``::

    plane = ControlPlane(state_dir)
    plane.start()           # idempotent: a running plane is reused
    plane.kubeconfig        # token auth as cluster-admin, verified TLS
    plane.stop()

Authentication is a static token file and authorization is Node,RBAC, as in a real cluster,
so the operator's own RBAC can be exercised with a token of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import kubernetes
import yaml

from cluster.nodes import KWOK_ANNOTATION, default_nodes
from cluster.pki import Pki, write_pki

__all__ = ["BUILD_SCRIPT", "REPO", "ControlPlane", "ControlPlaneError", "build_binaries"]

REPO = pathlib.Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "cluster" / "build.sh"
STAGES = REPO / "cluster" / "kwok-stages.yaml"
# Pods get IPs from here: loopback, so a fake vLLM replica can serve at a pod's own address.
POD_CIDR = "127.16.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"  # ClusterIPs are only allocated, never dialled: there is no kube-proxy
_START_TIMEOUT = 180.0
_STOP_TIMEOUT = 20.0
_COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


class ControlPlaneError(RuntimeError):
    pass


def build_binaries() -> pathlib.Path:
    """Build (once; cached outside the repo) and return the directory with the five binaries."""
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise ControlPlaneError(f"{BUILD_SCRIPT.relative_to(REPO)} failed with exit code {result.returncode}")
    return pathlib.Path(result.stdout.strip().splitlines()[-1])


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our own exited child) is not alive.
    with contextlib.suppress(OSError):
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


@dataclass
class _State:
    ports: dict[str, int]
    pids: dict[str, int]
    bin_dir: str

    def dump(self, path: pathlib.Path) -> None:
        path.write_text(json.dumps({"ports": self.ports, "pids": self.pids, "bin_dir": self.bin_dir}, indent=2))

    @classmethod
    def load(cls, path: pathlib.Path) -> _State | None:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return cls(ports=raw["ports"], pids=raw["pids"], bin_dir=raw["bin_dir"])


class ControlPlane:
    def __init__(self, state_dir: pathlib.Path | str | None = None) -> None:
        self.state_dir = pathlib.Path(state_dir or os.environ.get("POOLPILOT_CLUSTER_DIR") or REPO / ".cluster")
        self.kubeconfig = self.state_dir / "kubeconfig"
        self._state_file = self.state_dir / "state.json"
        self.log_dir = self.state_dir / "logs"

    # --- status -------------------------------------------------------------------------

    def running(self) -> bool:
        state = _State.load(self._state_file)
        if state is None or not all(_alive(pid) for pid in state.pids.values()):
            return False
        return self._ready(state.ports["apiserver"])

    def _ready(self, port: int) -> bool:
        context = ssl.create_default_context(cafile=str(self.state_dir / "pki" / "ca.crt"))
        token = self._admin_token()
        request = urllib.request.Request(f"https://127.0.0.1:{port}/readyz",
                                         headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=3, context=context) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError, ssl.SSLError):
            return False

    def _admin_token(self) -> str:
        for line in (self.state_dir / "pki" / "tokens.csv").read_text().splitlines():
            token, user = line.split(",")[:2]
            if user == "admin":
                return token
        raise ControlPlaneError("no admin token")

    # --- start --------------------------------------------------------------------------

    def start(self, bin_dir: pathlib.Path | None = None, *, nodes: Iterable[dict[str, object]] | None = None) -> None:
        if self.running():
            return
        self.stop()  # whatever is left of an earlier plane
        bin_dir = bin_dir or build_binaries()
        missing = [c for c in _COMPONENTS if not (bin_dir / c).exists()]
        if missing:
            raise ControlPlaneError(f"missing binaries in {bin_dir}: {missing}")
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self.log_dir.mkdir(parents=True)
        pki = write_pki(self.state_dir / "pki")
        names = ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok")
        ports = dict(zip(names, _free_ports(len(names)), strict=True))
        state = _State(ports=ports, pids={}, bin_dir=str(bin_dir))
        server = f"https://127.0.0.1:{ports['apiserver']}"
        for user in ("admin", "system:kube-controller-manager", "system:kube-scheduler", "kwok"):
            self._write_kubeconfig(self.state_dir / f"{user.rsplit(':', 1)[-1]}.kubeconfig", server, pki, user)
        shutil.copy(self.state_dir / "admin.kubeconfig", self.kubeconfig)
        try:
            self._start_etcd(bin_dir, state)
            self._start_apiserver(bin_dir, state, pki)
            self._start_controllers(bin_dir, state, pki)
            self._wait_for_cluster(nodes if nodes is not None else default_nodes())
        except BaseException:
            self.stop()
            raise

    def _write_kubeconfig(self, path: pathlib.Path, server: str, pki: Pki, user: str) -> None:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "poolpilot-test",
            "clusters": [{"name": "poolpilot-test", "cluster": {
                "server": server, "certificate-authority": str(pki.ca_cert)}}],
            "users": [{"name": user, "user": {"token": pki.tokens[user]}}],
            "contexts": [{"name": "poolpilot-test", "context": {"cluster": "poolpilot-test", "user": user}}],
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)

    def _spawn(self, state: _State, name: str, args: list[str]) -> None:
        with (self.log_dir / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True, cwd=self.state_dir)
        state.pids[name] = process.pid
        state.dump(self._state_file)

    def _wait(self, what: str, probe: Callable[[], bool], state: _State, timeout: float = _START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [name for name, pid in state.pids.items() if not _alive(pid)]
            if dead:
                raise ControlPlaneError(f"{', '.join(dead)} exited while waiting for {what}:\n{self._tails(dead)}")
            if probe():
                return
            time.sleep(0.2)
        raise ControlPlaneError(f"timed out after {timeout:.0f} s waiting for {what}:\n{self._tails(state.pids)}")

    def _tails(self, names: Iterable[str]) -> str:
        parts = []
        for name in names:
            path = self.log_dir / f"{name}.log"
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"--- {name} ({path}) ---\n" + "\n".join(text.splitlines()[-25:]))
        return "\n".join(parts)

    def _start_etcd(self, bin_dir: pathlib.Path, state: _State) -> None:
        client = f"http://127.0.0.1:{state.ports['etcd']}"
        peer = f"http://127.0.0.1:{state.ports['etcd-peer']}"
        self._spawn(state, "etcd", [
            str(bin_dir / "etcd"), "--name=poolpilot", f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=poolpilot={peer}", "--initial-cluster-state=new",
            # A throw-away store: durability costs fsyncs the tests do not need (as envtest runs it).
            "--unsafe-no-fsync", "--log-level=warn", "--quota-backend-bytes=4294967296",
        ])

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"{client}/health", timeout=2) as response:
                    return bool(json.loads(response.read()).get("health") == "true")
            except (urllib.error.URLError, OSError, ValueError):
                return False

        self._wait("etcd", healthy, state)

    def _start_apiserver(self, bin_dir: pathlib.Path, state: _State, pki: Pki) -> None:
        self._spawn(state, "kube-apiserver", [
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{state.ports['etcd']}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={state.ports['apiserver']}",
            f"--cert-dir={pki.directory}", f"--tls-cert-file={pki.server_cert}",
            f"--tls-private-key-file={pki.server_key}", f"--client-ca-file={pki.ca_cert}",
            f"--token-auth-file={pki.token_file}", "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.service_account_public_key}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # The `kubernetes` Service would get 127.0.0.1, which EndpointSlice validation refuses.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true", "--profiling=false", "--v=1",
        ])
        self._wait("kube-apiserver /readyz", lambda: self._ready(state.ports["apiserver"]), state)

    def _start_controllers(self, bin_dir: pathlib.Path, state: _State, pki: Pki) -> None:
        def control_loop(component: str, port: str) -> list[str]:
            kubeconfig = self.state_dir / f"{component}.kubeconfig"
            return [str(bin_dir / component), "--bind-address=127.0.0.1", "--leader-elect=false", "--v=1",
                    f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
                    f"--authorization-kubeconfig={kubeconfig}", f"--secure-port={state.ports[port]}"]

        self._spawn(state, "kube-controller-manager", [
            *control_loop("kube-controller-manager", "controller-manager"),
            f"--service-account-private-key-file={pki.service_account_key}", f"--root-ca-file={pki.ca_cert}",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--controllers=*",
            # Each controller acts as its own ServiceAccount with its bootstrap role, as kubeadm runs it.
            "--use-service-account-credentials=true",
        ])
        self._spawn(state, "kube-scheduler", control_loop("kube-scheduler", "scheduler"))
        self._spawn(state, "kwok", [
            str(bin_dir / "kwok"), f"--kubeconfig={self.state_dir / 'kwok.kubeconfig'}", f"--config={STAGES}",
            f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION[0]}={KWOK_ANNOTATION[1]}",
            f"--cidr={POD_CIDR}", "--node-ip=127.0.0.1", "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{state.ports['kwok']}",
        ])

    def _wait_for_cluster(self, nodes: Iterable[dict[str, object]]) -> None:
        state = _State.load(self._state_file)
        assert state is not None
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=configuration)
        with kubernetes.client.ApiClient(configuration) as client:
            core = kubernetes.client.CoreV1Api(client)
            for node in nodes:
                core.create_node(node)

            def settled() -> bool:
                # kube-controller-manager's service-account controller made `default`; KWOK made the nodes Ready.
                try:
                    core.read_namespaced_service_account("default", "default")
                except kubernetes.client.ApiException:
                    return False
                return all(any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or []))
                           for n in core.list_node().items)

            self._wait("the controllers and KWOK's nodes", settled, state)

    # --- stop ---------------------------------------------------------------------------

    def stop(self) -> None:
        state = _State.load(self._state_file)
        if state is None:
            return
        # Clients before the server, the server before its store.
        for name in reversed(_COMPONENTS):
            pid = state.pids.get(name)
            if pid is not None and _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGTERM)
                deadline = time.monotonic() + _STOP_TIMEOUT
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if _alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG) if pid is not None else None
        self._state_file.unlink(missing_ok=True)

    def logs(self) -> str:
        return self._tails(_COMPONENTS)
