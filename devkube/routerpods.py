"""The router's pods run the real router: `poolpilot router` with the pod's own arguments, at the pod's IP.

``RouterPods`` plays the kubelet's part for the pods of a pool's ``NAME-router`` Deployment (label
``poolpilot.io/component: router``): from the moment such a pod has an IP until it is deleted, a
process runs the container's ``args`` as the operator rendered them, as a real node would run the
image's ``poolpilot`` entrypoint. What a kubelet adds is done here too:

* the Secret volume the container mounts (the provider's API key) is written to a directory of its
  own, and the path in ``--api-key-file`` points there (a pod whose Secret does not exist does not
  start, as ``ContainerCreating`` waits for it on a real node);
* ``--host POD_IP`` (a pod has the address to itself; here the pods share the machine) and
  ``--kubeconfig`` (the in-cluster credentials a pod's ServiceAccount would give);
* a graceful deletion sends SIGTERM; the process gets the pod's grace (30 s by default) to exit.

Each router's output goes to a log file (``logs()``), so a test can read what the router logged.
"""

from __future__ import annotations

import base64
import logging
import os
import pathlib
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from typing import Any

from controller.kube.render import COMPONENT_LABEL
from devkube.wiring import PodLister, _PollingThread

__all__ = ["RouterPods"]

Manifest = dict[str, Any]
SecretReader = Callable[[str, str], Manifest | None]  # (namespace, name) -> the Secret, or None
logger = logging.getLogger(__name__)
DEFAULT_GRACE_SECONDS = 30.0


class RouterPods(_PollingThread):
    def __init__(self, pods: PodLister, secrets: SecretReader, kubeconfig: str | os.PathLike[str], *,
                 period_seconds: float = 0.2) -> None:
        super().__init__("router-pods", period_seconds)
        self._pods, self._secrets, self._kubeconfig = pods, secrets, str(kubeconfig)
        self._root = pathlib.Path(tempfile.mkdtemp(prefix="poolpilot-router-pods-"))
        self._running: dict[tuple[str, str], subprocess.Popen[bytes]] = {}

    def step(self) -> None:
        wanted = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in _router_pods(self._pods())}
        for key in [k for k in self._running if k not in wanted or wanted[k]["metadata"].get("deletionTimestamp")]:
            self._terminate(key, _grace(wanted.get(key)))
        for key, pod in sorted(wanted.items()):
            if key in self._running or pod["metadata"].get("deletionTimestamp"):
                continue
            command = self._command(pod)
            if command is None:
                continue  # its Secret is not there yet: try again next step
            log = (self._root / f"{key[0]}.{key[1]}.log").open("ab")
            self._running[key] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            log.close()
            logger.info("router pod %s/%s started: pid %d", *key, self._running[key].pid)

    def logs(self) -> str:
        """Everything the routers wrote, in one text."""
        return "".join(path.read_text(errors="replace") for path in sorted(self._root.glob("*.log")))

    def running(self) -> list[tuple[str, str]]:
        return sorted(key for key, process in self._running.items() if process.poll() is None)

    def close(self) -> None:
        for key in list(self._running):
            self._terminate(key, 10.0)

    def _terminate(self, key: tuple[str, str], grace: float) -> None:
        process = self._running.pop(key)
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def _command(self, pod: Manifest) -> list[str] | None:
        container = pod["spec"]["containers"][0]
        args = [str(a) for a in container.get("args") or []]
        mounted = self._mount_secrets(pod, container)
        if mounted is None:
            return None
        for index, arg in enumerate(args):
            for mount_path, directory in mounted.items():
                if arg.startswith(mount_path.rstrip("/") + "/"):
                    args[index] = str(directory / arg[len(mount_path.rstrip("/")) + 1:])
        return [sys.executable, "-m", "controller.cli", *args, "--host", pod["status"]["podIP"],
                "--kubeconfig", self._kubeconfig]

    def _mount_secrets(self, pod: Manifest, container: Manifest) -> dict[str, pathlib.Path] | None:
        """Mount path -> the directory holding the Secret's files (its items, or every key)."""
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        mounted: dict[str, pathlib.Path] = {}
        for mount in container.get("volumeMounts") or []:
            source = (volumes.get(mount["name"]) or {}).get("secret")
            if source is None:
                continue
            secret = self._secrets(pod["metadata"]["namespace"], source["secretName"])
            if secret is None:
                return None
            data = {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()}
            items = source.get("items") or [{"key": key, "path": key} for key in data]
            directory = self._root / f"{pod['metadata']['name']}-{mount['name']}"
            directory.mkdir(parents=True, exist_ok=True)
            for item in items:
                if item["key"] not in data:
                    return None
                target = directory / item["path"]
                target.write_bytes(data[item["key"]])
                target.chmod(0o400)  # a Secret volume's files are read-only (defaultMode 0644; ours 0400)
            mounted[mount["mountPath"]] = directory
        return mounted


def _router_pods(pods: Iterable[Manifest]) -> list[Manifest]:
    return [p for p in pods if (p.get("status") or {}).get("podIP")
            and (p["metadata"].get("labels") or {}).get(COMPONENT_LABEL) == "router"]


def _grace(pod: Manifest | None) -> float:
    if pod is None:
        return 0.0  # gone already: the kubelet's final delete
    seconds = pod["metadata"].get("deletionGracePeriodSeconds")
    return float(seconds) if seconds is not None else DEFAULT_GRACE_SECONDS
