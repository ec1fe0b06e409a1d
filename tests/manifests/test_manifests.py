"""The install: manifests/, the examples, the Dockerfile, and the package the image is built from.

Checks what a cluster admin relies on without a cluster: every object validates against the
Kubernetes 1.30 schemas, the examples pass the CRD (defaults, schema, CEL) and ``validate_pool``,
the RBAC grants exactly the table below (so a new permission is a deliberate change here too), the
operator's Deployment is locked down, ``kubectl apply -k`` and the plain files install the same
objects, and the package builds and installs the way the Dockerfile does it.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from controller.api.crd import generate_crd, render_crd_yaml
from controller.api.spec import API_GROUP, API_VERSION, KIND, InferencePoolSpec
from controller.core.pool import validate_pool
from controller.settings import OperatorSettings
from devkube.crd_schema import admit, openapi_schema

REPO = pathlib.Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
EXAMPLES = MANIFESTS / "examples"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
KUBERNETES_VERSION = "1.30"
OPERATOR_NAMESPACE = "poolpilot-system"
OPERATOR_IMAGE = "ghcr.io/poolpilot/poolpilot"
# The names kustomize looks for; an extensionless "Kustomization" is the one `kubectl apply -f` skips.
KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
# What `kubectl apply -f DIR` reads from a directory (k8s.io/cli-runtime resource.FileExtensions).
KUBECTL_EXTENSIONS = (".json", ".yaml", ".yml")
PROJECT_VERSION: str = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]

Obj = dict[str, Any]


def load_objects(path: pathlib.Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kustomization_file() -> pathlib.Path:
    found = [MANIFESTS / name for name in KUSTOMIZATION_NAMES if (MANIFESTS / name).is_file()]
    assert len(found) == 1, f"manifests/ needs exactly one kustomization file, found {found}"
    return found[0]


def manifest_files() -> list[pathlib.Path]:
    """The top-level files of manifests/ that hold objects: all but the kustomization."""
    return sorted(
        path for path in MANIFESTS.iterdir()
        if path.is_file() and path.name not in KUSTOMIZATION_NAMES and not path.name.startswith(".")
    )


def example_files() -> list[pathlib.Path]:
    return sorted(EXAMPLES.glob("*.yaml"))


def all_objects() -> list[Obj]:
    return [obj for path in manifest_files() for obj in load_objects(path)]


def objects_of_kind(kind: str) -> list[Obj]:
    return [obj for obj in all_objects() if obj["kind"] == kind]


def the(kind: str, name: str | None = None) -> Obj:
    found = [obj for obj in objects_of_kind(kind) if name is None or obj["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''} in manifests/, found {len(found)}"
    return found[0]


def object_id(obj: Mapping[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


# ------------------------------------------------------------------------------------ the objects


@pytest.mark.parametrize("path", [*manifest_files(), *example_files()], ids=lambda path: path.name)
def test_manifest_file_parses_to_kubernetes_objects(path: pathlib.Path) -> None:
    assert path.suffix == ".yaml", f"{path.name}: object files end in .yaml"
    objects = load_objects(path)
    assert objects, f"{path.name} holds no object"
    for obj in objects:
        assert isinstance(obj, dict)
        assert {"apiVersion", "kind", "metadata"} <= obj.keys(), f"{path.name}: {sorted(obj)}"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", obj["metadata"]["name"])


@pytest.mark.parametrize("obj", all_objects(), ids=object_id)
def test_builtin_object_validates_against_kubernetes_schemas(obj: Obj) -> None:
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(part) for part in error.absolute_path)
        pytest.fail(f"{object_id(obj)} is not a valid Kubernetes {KUBERNETES_VERSION} object: "
                    f"{error.message} at {where}")


def test_namespaced_objects_live_in_the_operator_namespace() -> None:
    assert the("Namespace")["metadata"]["name"] == OPERATOR_NAMESPACE
    for kind in ("ServiceAccount", "Deployment", "PodDisruptionBudget", "Role", "RoleBinding"):
        assert objects_of_kind(kind), kind
        for obj in objects_of_kind(kind):
            assert obj["metadata"].get("namespace") == OPERATOR_NAMESPACE, object_id(obj)
    for obj in objects_of_kind("ClusterRole") + objects_of_kind("ClusterRoleBinding"):
        assert "namespace" not in obj["metadata"], f"{object_id(obj)} is cluster-scoped"


def test_the_crd_is_installed_separately_not_with_the_operator() -> None:
    kinds = {obj["kind"] for obj in all_objects()}
    assert "CustomResourceDefinition" not in kinds, "the CRD lives in crds/; the admin applies it first"
    assert KIND not in kinds, "pools are the users' objects: examples/ only"


CRD_SCHEMA = openapi_schema(generate_crd())
EXAMPLE_CASES = [
    pytest.param(path, id=path.name) for path in example_files()
]


@pytest.mark.parametrize("path", EXAMPLE_CASES)
def test_example_pool_passes_the_crd_and_validate_pool(path: pathlib.Path) -> None:
    (obj,) = load_objects(path)
    assert (obj["apiVersion"], obj["kind"]) == (f"{API_GROUP}/{API_VERSION}", KIND)
    assert obj["metadata"].get("namespace"), "examples name their namespace"
    admission = admit(CRD_SCHEMA, obj)
    assert admission.pruned == (), f"the API server would drop {admission.pruned}: a typo?"
    assert admission.accepted, [str(problem) for problem in admission.problems]
    parsed = validate_pool(obj["metadata"]["name"], obj["spec"])
    assert isinstance(parsed, InferencePoolSpec), parsed
    assert validate_pool(obj["metadata"]["name"], admission.obj["spec"]) == parsed


def test_examples_are_not_applied_with_the_operator() -> None:
    # `kubectl apply -f manifests/` does not recurse, and the kustomization does not list them.
    assert EXAMPLES.parent == MANIFESTS
    assert example_files(), "manifests/examples/ has the example pools"


# ----------------------------------------------------------------------------------------- RBAC

Grants = dict[tuple[str, str], set[str]]
# Every grant, per ClusterRole: (apiGroup, resource) -> verbs. A test fails when the manifests grant
# more or less than this, so a new permission is a decision made in two places.
EXPECTED_GRANTS: dict[str, Grants] = {
    "poolpilot": {
        ("poolpilot.io", "inferencepools"): {"get", "list", "watch", "patch"},
        ("poolpilot.io", "inferencepools/status"): {"patch"},
        ("poolpilot.io", "inferencepools/finalizers"): {"update"},
        ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "delete"},
        ("", "services"): {"get", "list", "watch", "create", "patch"},
        ("policy", "poddisruptionbudgets"): {"get", "list", "watch", "create", "patch", "delete"},
        ("", "serviceaccounts"): {"get", "list", "watch", "create", "patch", "delete"},
        ("rbac.authorization.k8s.io", "roles"): {"get", "list", "watch", "create", "patch", "delete"},
        ("rbac.authorization.k8s.io", "rolebindings"): {"get", "list", "watch", "create", "patch", "delete"},
        ("discovery.k8s.io", "endpointslices"): {"list", "watch"},
        ("gateway.networking.k8s.io", "httproutes"): {"get", "patch"},
        ("", "pods"): {"get", "list", "watch", "patch"},
        ("", "pods/eviction"): {"create"},
        ("", "nodes"): {"get", "list", "watch"},
        ("", "events"): {"create", "patch"},
        ("", "namespaces"): {"list", "watch"},
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    },
    "poolpilot-inferencepool-editor": {
        ("poolpilot.io", "inferencepools"): {
            "get", "list", "watch", "create", "update", "patch", "delete", "deletecollection",
        },
        ("poolpilot.io", "inferencepools/status"): {"get"},
    },
    "poolpilot-inferencepool-viewer": {
        ("poolpilot.io", "inferencepools"): {"get", "list", "watch"},
        ("poolpilot.io", "inferencepools/status"): {"get", "list", "watch"},
    },
}
# The same for the Roles, which grant in the operator's namespace only.
EXPECTED_ROLE_GRANTS: dict[str, Grants] = {
    # The leader election reads, creates and (conditionally) updates its Lease; nothing lists or watches it.
    "poolpilot-leader-election": {("coordination.k8s.io", "leases"): {"get", "create", "update"}},
}
AGGREGATION = "rbac.authorization.k8s.io/aggregate-to-"


def grants_of(role: Mapping[str, Any]) -> Grants:
    grants: Grants = {}
    for rule in role.get("rules", []):
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                grants.setdefault((group, resource), set()).update(rule.get("verbs", []))
    return grants


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def test_rbac_has_no_wildcards_and_no_blanket_grants() -> None:
    roles = objects_of_kind("ClusterRole") + objects_of_kind("Role")
    assert roles
    for role in roles:
        assert "*" not in "".join(_strings(role.get("rules", []))), f"{object_id(role)} has a wildcard"
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule and "resourceNames" not in rule, object_id(role)
            assert rule.get("apiGroups") and rule.get("resources") and rule.get("verbs"), object_id(role)
        assert "aggregationRule" not in role, f"{object_id(role)} would collect other roles' rules"


def test_rbac_grants_exactly_the_table() -> None:
    roles = {role["metadata"]["name"]: grants_of(role) for role in objects_of_kind("ClusterRole")}
    assert set(roles) == set(EXPECTED_GRANTS), "a ClusterRole was added or removed: update EXPECTED_GRANTS"
    for name, expected in EXPECTED_GRANTS.items():
        actual = roles[name]
        for key in sorted(set(expected) | set(actual)):
            assert actual.get(key, set()) == expected.get(key, set()), (
                f"{name} grants {sorted(actual.get(key, set()))} on {key}, the table says "
                f"{sorted(expected.get(key, set()))}"
            )


def test_roles_grant_exactly_the_table_and_are_bound_to_the_operator() -> None:
    roles = {role["metadata"]["name"]: grants_of(role) for role in objects_of_kind("Role")}
    assert roles == EXPECTED_ROLE_GRANTS
    account = the("ServiceAccount")
    for name in EXPECTED_ROLE_GRANTS:
        binding = the("RoleBinding", name)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                        "namespace": account["metadata"]["namespace"]}]


def test_user_roles_aggregate_into_the_builtin_roles_and_the_operator_role_does_not() -> None:
    def aggregated(name: str) -> set[str]:
        labels = the("ClusterRole", name)["metadata"].get("labels", {})
        return {key.removeprefix(AGGREGATION) for key, value in labels.items()
                if key.startswith(AGGREGATION) and value == "true"}

    assert aggregated("poolpilot-inferencepool-editor") == {"edit", "admin"}
    assert aggregated("poolpilot-inferencepool-viewer") == {"view"}
    assert aggregated("poolpilot") == set(), "the operator's grants must not reach namespace users"


def test_operator_role_is_bound_to_the_operator_service_account() -> None:
    binding = the("ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "poolpilot"}
    account = the("ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": account["metadata"]["namespace"]}]
    pod = the("Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]


# ----------------------------------------------------------------------------------- Deployment


def operator_deployment() -> Obj:
    return the("Deployment", "poolpilot")


def operator_container() -> Obj:
    containers: list[Obj] = operator_deployment()["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one container: the operator"
    return containers[0]


def test_two_replicas_roll_one_at_a_time_on_different_nodes() -> None:
    spec = operator_deployment()["spec"]
    assert spec["replicas"] == 2
    # A new pod first (it stands by), then an old one goes: the leader is never without a standby.
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    (term,) = spec["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"] == spec["selector"]


def test_a_disruption_budget_keeps_one_replica() -> None:
    budget = the("PodDisruptionBudget", "poolpilot")
    assert budget["spec"] == {"minAvailable": 1, "selector": operator_deployment()["spec"]["selector"]}


def test_the_replicas_elect_through_a_lease_in_their_own_namespace() -> None:
    """The Lease is where the Role grants it: the pod's namespace, from the Downward API."""
    env = {item["name"]: item for item in operator_container().get("env", [])}
    assert env["POOLPILOT_POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert "POOLPILOT_LEADER_ELECTION" not in env and OperatorSettings().leader_election  # on by default
    settings = OperatorSettings(pod_namespace=OPERATOR_NAMESPACE)
    assert settings.lease_namespace_or_default() == the("Role", "poolpilot-leader-election")["metadata"]["namespace"]


def test_operator_labels_and_selector() -> None:
    deployment = operator_deployment()
    wanted = {"app.kubernetes.io/name": "poolpilot", "app.kubernetes.io/component": "operator"}
    template_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert wanted.items() <= deployment["metadata"]["labels"].items()
    assert wanted.items() <= template_labels.items()
    assert deployment["spec"]["selector"] == {"matchLabels": wanted}


def test_operator_is_locked_down() -> None:
    pod = operator_deployment()["spec"]["template"]["spec"]
    container = operator_container()
    pod_context, context = pod.get("securityContext", {}), container.get("securityContext", {})

    def effective(key: str) -> Any:
        return context.get(key, pod_context.get(key))

    assert effective("runAsNonRoot") is True
    assert effective("runAsUser") == 10001
    assert effective("runAsGroup") == 10001
    assert effective("seccompProfile") == {"type": "RuntimeDefault"}
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert not context.get("privileged", False)
    assert not any(pod.get(key) for key in ("hostNetwork", "hostPID", "hostIPC"))
    tmp = [mount for mount in container["volumeMounts"] if mount["mountPath"] == "/tmp"]
    assert len(tmp) == 1, "the read-only root filesystem needs a writable /tmp"
    (volume,) = [volume for volume in pod["volumes"] if volume["name"] == tmp[0]["name"]]
    assert "emptyDir" in volume


def _container_port(container: Mapping[str, Any], port: int | str) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    numbers = [int(item["containerPort"]) for item in container.get("ports", []) if item.get("name") == port]
    assert len(numbers) == 1, f"the container has no port named {port!r}"
    return numbers[0]


@pytest.mark.parametrize("probe", ["livenessProbe", "readinessProbe"])
def test_probe_hits_kopf_liveness_endpoint(probe: str) -> None:
    container = operator_container()
    endpoint = urlsplit(OperatorSettings().liveness_url())
    check = container[probe]["httpGet"]
    assert check["path"] == endpoint.path == "/healthz"
    assert _container_port(container, check["port"]) == endpoint.port == 8080


def test_the_operator_knows_its_pod_ip_so_the_probe_listens_on_its_family() -> None:
    """The kubelet probes status.podIP; the default endpoint listens on that address's family."""
    env = {item["name"]: item for item in operator_container().get("env", [])}
    assert env["POOLPILOT_POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert "POOLPILOT_LIVENESS_ENDPOINT" not in env


@pytest.mark.parametrize(("pod_ip", "url"), [
    (None, "http://0.0.0.0:8080/healthz"),
    ("10.1.2.3", "http://0.0.0.0:8080/healthz"),
    ("fd00::5", "http://[::]:8080/healthz"),
])
def test_the_default_liveness_endpoint_follows_the_pod_ip_family(pod_ip: str | None, url: str) -> None:
    assert OperatorSettings(pod_ip=pod_ip).liveness_url() == url


def test_a_pod_ip_that_is_not_an_address_is_a_clear_settings_error() -> None:
    with pytest.raises(ValueError, match="'pod-1' is not an IP address"):
        OperatorSettings(pod_ip="pod-1")


UNITS = {"m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def quantity(value: str | int) -> float:
    """A Kubernetes quantity ("100m", "1", "256Mi") as a plain number."""
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    assert match and match.group(2) in UNITS, f"not a quantity this test knows: {value!r}"
    return float(match.group(1)) * UNITS[match.group(2)]


def test_operator_has_requests_and_limits_for_cpu_and_memory() -> None:
    resources = operator_container()["resources"]
    for resource in ("cpu", "memory"):
        request, limit = resources["requests"][resource], resources["limits"][resource]
        assert 0 < quantity(request) <= quantity(limit), f"{resource}: request {request}, limit {limit}"


def test_operator_command_env_and_image() -> None:
    container = operator_container()
    assert container["image"] == f"{OPERATOR_IMAGE}:{PROJECT_VERSION}"
    image = dockerfile()
    command = container.get("command", image.entrypoint)
    arguments = container.get("args", image.cmd if "command" not in container else [])
    assert [*command, *arguments] == ["poolpilot", "run"]
    env = {item["name"]: item for item in container["env"]}
    assert env["POOLPILOT_REPORTING_INSTANCE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["PYTHONUNBUFFERED"]["value"] == "1"
    settings = {f"POOLPILOT_{name.upper()}" for name in OperatorSettings.model_fields}
    unknown = {name for name in env if name.startswith("POOLPILOT_")} - settings
    assert not unknown, f"{unknown} set no operator setting (controller/settings.py)"


def test_the_router_runs_the_operators_own_image_by_default() -> None:
    """`poolpilot router` is the same package: a pool's router pods run what the operator runs."""
    assert OperatorSettings().router_image == operator_container()["image"]


# -------------------------------------------------------------------------------- kustomization


def kustomization() -> Obj:
    loaded: Obj = yaml.safe_load(kustomization_file().read_text())
    return loaded


def test_kustomization_lists_every_manifest_file() -> None:
    listed = kustomization()["resources"]
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    assert sorted(listed) == [path.name for path in manifest_files()], (
        "list every top-level file of manifests/ in the kustomization's resources (and nothing else)"
    )


def test_kustomization_sets_the_namespace_and_lets_users_override_the_image() -> None:
    spec = kustomization()
    assert (spec["apiVersion"], spec["kind"]) == ("kustomize.config.k8s.io/v1beta1", "Kustomization")
    assert spec["namespace"] == OPERATOR_NAMESPACE
    (image,) = spec["images"]
    assert image["name"] == OPERATOR_IMAGE
    assert image.get("newTag", PROJECT_VERSION) == PROJECT_VERSION


def test_kubectl_kustomize_renders_the_same_objects_as_the_plain_files() -> None:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with its built-in kustomize) is needed: admins install with kubectl apply -k"
    rendered = subprocess.run([kubectl, "kustomize", str(MANIFESTS)], capture_output=True, text=True,
                              timeout=60, check=False)
    assert rendered.returncode == 0, rendered.stderr
    built = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]

    def key(obj: Mapping[str, Any]) -> str:
        return f"{obj['kind']}/{obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"

    assert sorted(built, key=key) == sorted(all_objects(), key=key)
    assert built[0]["kind"] == "Namespace", "kustomize orders the Namespace first"


def test_plain_apply_reads_only_kubernetes_objects() -> None:
    read = [path for path in MANIFESTS.iterdir() if path.is_file() and path.suffix in KUBECTL_EXTENSIONS]
    for path in read:
        for obj in load_objects(path):
            assert not obj.get("apiVersion", "").startswith("kustomize.config.k8s.io"), path.name


def test_plain_apply_creates_the_namespace_before_what_lives_in_it() -> None:
    order = [obj for path in sorted(manifest_files()) for obj in load_objects(path)]
    first_namespaced = next(index for index, obj in enumerate(order) if obj["metadata"].get("namespace"))
    namespace_at = next(index for index, obj in enumerate(order) if obj["kind"] == "Namespace")
    assert namespace_at < first_namespaced, [object_id(obj) for obj in order]


# ------------------------------------------------------------------------------------ Dockerfile


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    stage: int


@dataclass(frozen=True)
class Dockerfile:
    instructions: tuple[Instruction, ...]
    stages: tuple[str, ...]  # the base image of each stage, ARG defaults substituted

    def of(self, keyword: str, stage: int | None = None) -> list[Instruction]:
        return [item for item in self.instructions
                if item.keyword == keyword and (stage is None or item.stage == stage)]

    @property
    def final(self) -> int:
        return len(self.stages) - 1

    def exec_form(self, keyword: str) -> list[str]:
        (last, *_) = reversed(self.of(keyword, self.final))
        parsed = json.loads(last.value)
        assert isinstance(parsed, list), f"{keyword} should use the exec (JSON) form"
        return [str(item) for item in parsed]

    @property
    def entrypoint(self) -> list[str]:
        return self.exec_form("ENTRYPOINT")

    @property
    def cmd(self) -> list[str]:
        return self.exec_form("CMD")

    def copy_sources(self, stage: int) -> list[str]:
        sources = []
        for item in self.of("COPY", stage):
            words = [word for word in shlex.split(item.value) if not word.startswith("--")]
            sources += words[:-1]
        return sources

    def key_values(self, keyword: str, stage: int) -> dict[str, str]:
        pairs = [word.split("=", 1) for item in self.of(keyword, stage) for word in shlex.split(item.value)]
        return {key: value for key, value in pairs}


def dockerfile() -> Dockerfile:
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        if raw.strip().startswith("#") or not raw.strip():
            continue
        pending += raw.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        lines.append(pending.strip())
        pending = ""
    args: dict[str, str] = {}
    instructions: list[Instruction] = []
    stages: list[str] = []
    for line in lines:
        keyword, _, value = line.partition(" ")
        keyword, value = keyword.upper(), value.strip()
        if keyword == "ARG" and not stages and "=" in value:
            name, default = value.split("=", 1)
            args[name] = default
        if keyword == "FROM":
            image = re.sub(r"\$\{?(\w+)\}?", lambda match: args.get(match.group(1), match.group(0)), value)
            stages.append(image)
        instructions.append(Instruction(keyword, value, len(stages) - 1))
    return Dockerfile(tuple(instructions), tuple(stages))


def test_dockerfile_is_multi_stage_on_python_311_slim() -> None:
    image = dockerfile()
    assert len(image.stages) >= 2, "build in one stage, run from another"
    assert all(stage.split()[0] == "python:3.11-slim" for stage in image.stages), image.stages
    assert image.stages[0].split()[-2:] == ["AS", "builder"]


def test_builder_installs_the_package_into_a_venv_without_dev_extras() -> None:
    image = dockerfile()
    runs = " && ".join(item.value for item in image.of("RUN", 0))
    assert "python -m venv /opt/poolpilot" in runs
    installs = [item.value for item in image.of("RUN", 0) if "pip install" in item.value]
    assert len(installs) == 1, installs
    words = shlex.split(installs[0])
    assert words[0] == "/opt/poolpilot/bin/pip" and "--no-cache-dir" in words and words[-1] == "."
    assert not {"-e", "--editable"} & set(words) and "[" not in installs[0], "a plain install, no extras"


def test_final_stage_copies_only_the_venv_and_runs_as_non_root() -> None:
    image = dockerfile()
    final = image.final
    copies = [item.value for item in image.of("COPY", final)]
    assert copies == ["--from=builder /opt/poolpilot /opt/poolpilot"]
    assert not any("pip" in item.value for item in image.of("RUN", final))
    users = [item for item in image.instructions if item.keyword == "USER"]
    assert users and users[-1].stage == final
    assert users[-1].value == "10001", "a numeric non-root user, so the kubelet can check runAsNonRoot"
    last_run = max(index for index, item in enumerate(image.instructions) if item.keyword == "RUN")
    assert image.instructions.index(users[-1]) > last_run
    env = image.key_values("ENV", final)
    assert env["PATH"].startswith("/opt/poolpilot/bin:")
    assert env["PYTHONUNBUFFERED"] == "1"
    assert [item.value for item in image.of("EXPOSE", final)] == ["8080"]


def test_image_runs_poolpilot_run_and_carries_oci_labels() -> None:
    image = dockerfile()
    assert image.entrypoint == ["poolpilot"]
    assert image.cmd == ["run"]
    labels = image.key_values("LABEL", image.final)
    for key in ("title", "description", "version", "licenses", "source"):
        assert labels.get(f"org.opencontainers.image.{key}"), f"OCI label {key} is missing"
    assert labels["org.opencontainers.image.version"] == PROJECT_VERSION


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/"))
    wildcards = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(wildcards.get(part, re.escape(part)) for part in parts))


def dockerignored(relative: str) -> bool:
    """Whether Docker leaves ``relative`` out of the build context (.dockerignore, ``!`` included)."""
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.strip().startswith("#")]
    parts = pathlib.PurePosixPath(relative).parts
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _ignore_regex(pattern.lstrip("!"))
        if any(regex.fullmatch("/".join(parts[:end])) for end in range(1, len(parts) + 1)):
            excluded = not negated
    return excluded


def test_dockerignore_keeps_the_context_small_but_complete() -> None:
    left_out = (".git", ".venv", "tests/api/test_crd.py", "bench", "docs", ".mypy_cache", ".pytest_cache",
                ".ruff_cache", ".hypothesis", "controller/__pycache__/cli.cpython-311.pyc")
    for path in left_out:
        assert dockerignored(path), f"{path} should not be sent to the docker build"
    image = dockerfile()
    for source in image.copy_sources(0):
        assert (REPO / source).exists(), f"the Dockerfile copies {source}, which does not exist"
        assert not dockerignored(source), f".dockerignore leaves out {source}, which the Dockerfile copies"
    assert not dockerignored("controller/cli.py")


# ------------------------------------------------------------------------------------ the package


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The wheel built from what the Dockerfile's builder stage copies, as `pip install .` builds it."""
    context = tmp_path_factory.mktemp("context")
    for source in dockerfile().copy_sources(0):
        origin = REPO / source
        if origin.is_dir():
            shutil.copytree(origin, context / source, ignore=lambda folder, names: [
                name for name in names
                if dockerignored(str((pathlib.Path(folder) / name).relative_to(REPO)))
            ])
        else:
            shutil.copy2(origin, context / source)
    out = tmp_path_factory.mktemp("wheels")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(context)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (path,) = out.glob("poolpilot-*.whl")
    return path


def test_wheel_holds_the_package_and_the_entry_point(wheel: pathlib.Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"poolpilot-{PROJECT_VERSION}.dist-info"
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        metadata = archive.read(f"{info}/METADATA").decode()
    package = {"controller/__init__.py", "controller/cli.py", "controller/api/crd.py", "controller/py.typed"}
    assert package <= names
    assert not [name for name in names if name.startswith(("tests/", "bench/", "docs/"))]
    assert not [name for name in names if "__pycache__" in name]
    assert re.search(r"^\[console_scripts\]\npoolpilot = controller\.cli:main$", entry_points, re.MULTILINE)
    assert f"Version: {PROJECT_VERSION}" in metadata


def test_installed_wheel_runs_the_poolpilot_command(wheel: pathlib.Path, tmp_path: pathlib.Path) -> None:
    site = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", "--target", str(site),
         str(wheel)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    script = site / "bin" / "poolpilot"
    assert script.is_file()
    # Run from elsewhere, with the installed copy first on the path: not the source tree.
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import controller; print(controller.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60, check=False)
    assert pathlib.Path(where.stdout.strip()).is_relative_to(site), where.stdout + where.stderr
    crd = subprocess.run([sys.executable, str(script), "crd"], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=60, check=False)
    assert crd.returncode == 0, crd.stderr[-3000:]
    assert crd.stdout == render_crd_yaml()
    usage = subprocess.run([sys.executable, str(script), "run", "--help"], capture_output=True, text=True,
                           cwd=tmp_path, env=env, timeout=60, check=False)
    assert usage.returncode == 0 and "--namespace" in usage.stdout, usage.stderr
