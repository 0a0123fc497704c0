"""deploy/: the Kubernetes manifests validate against the Kubernetes schemas (offline,
with kubernetes-validate's bundled schemas, strict: unknown fields are errors), hang
together (selectors, names, ports, probes, the token Secret), pass the daemon's own
argument parser, and the Dockerfile runs ``exec-runtime serve`` as a non-root user
with bubblewrap."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from exec_runtime._cli.main import _build_parser, serve_options

# Both come with the test extra ('.[test]'); only a bare install skips these.
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate (the test extra) checks the manifests"
)
yaml = pytest.importorskip("yaml", reason="PyYAML (the test extra) parses the manifests")

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes still commonly run, and the newest the validator knows.
VERSIONS = ["1.28.0", kubernetes_validate.latest_version()]


def resources() -> dict[str, dict[str, Any]]:
    """Every resource in deploy/kubernetes, by kind."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                assert document["kind"] not in found, f"two {document['kind']}s"
                found[document["kind"]] = document
    return found


def test_the_expected_resources_are_there() -> None:
    assert set(resources()) == {
        "Namespace",
        "Service",
        "StatefulSet",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", sorted(MANIFESTS.glob("*.yaml")), ids=lambda p: p.name)
def test_manifest_validates_against_the_kubernetes_schema(path: Path, version: str) -> None:
    # validate() raises ValidationError for a resource that does not match its schema
    # (strict: also for a field the schema does not have, such as a misspelt key), and
    # SchemaNotFoundError for a kind it has no schema for: nothing passes unchecked.
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents
    for document in documents:
        validated = kubernetes_validate.validate(document, version, strict=True)
        assert validated == version.rsplit(".", 1)[0]


def test_the_validator_catches_a_broken_statefulset() -> None:
    broken = copy.deepcopy(resources()["StatefulSet"])
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["httpGet"]["pathh"] = "/readyz"  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)
    broken = copy.deepcopy(resources()["StatefulSet"])
    broken["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_the_resources_hang_together() -> None:
    found = resources()
    service, stateful, budget = found["Service"], found["StatefulSet"], found["PodDisruptionBudget"]
    namespace = found["Namespace"]["metadata"]["name"]
    for resource in (service, stateful, budget, found["NetworkPolicy"]):
        assert resource["metadata"]["namespace"] == namespace
    pod = stateful["spec"]["template"]
    labels = pod["metadata"]["labels"]
    # Headless, selecting the StatefulSet's pods, named as its serviceName.
    assert service["spec"]["clusterIP"] == "None"
    assert stateful["spec"]["serviceName"] == service["metadata"]["name"]
    for selector in (
        service["spec"]["selector"],
        stateful["spec"]["selector"]["matchLabels"],
        budget["spec"]["selector"]["matchLabels"],
        found["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()
    container = pod["spec"]["containers"][0]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in ports
    # Probes on /readyz; Prometheus annotations on the daemon's port.
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/readyz"
        assert container[probe]["httpGet"]["port"] in ports
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) in ports.values()
    # Limits, a workspace volume per pod, the token from a Secret, not root.
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    claims = {claim["metadata"]["name"] for claim in stateful["spec"]["volumeClaimTemplates"]}
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts["workspace"] == "/workspace" and "workspace" in claims
    env = {variable["name"]: variable for variable in container["env"]}
    token = env["EXEC_RUNTIME_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert token == {"name": "exec-runtime-token", "key": "token"}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert budget["spec"]["maxUnavailable"] == 1


def test_the_daemon_accepts_the_statefulsets_arguments() -> None:
    container = resources()["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]
    args = _build_parser().parse_args(container["args"])
    # The token comes from $EXEC_RUNTIME_TOKEN (a Secret), no --token-file.
    config = serve_options(args, {"EXEC_RUNTIME_TOKEN": "from-the-secret"}).config
    assert config.listen == "ws://0.0.0.0:8765"
    assert config.token == "from-the-secret"
    port = container["ports"][0]["containerPort"]
    assert config.listen.endswith(f":{port}")


def test_dockerfile_runs_serve_as_a_non_root_user_with_bubblewrap() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    joined = re.sub(r"\\\n\s*", " ", text)  # continuation lines into their instruction
    instructions = [line for line in joined.splitlines() if line and not line.startswith("#")]
    assert any(re.match(r"RUN .*apt-get install .*\bbubblewrap\b", line) for line in instructions)
    assert "libseccomp2" in text
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert 'ENTRYPOINT ["/usr/bin/tini", "--", "exec-runtime"]' in instructions
    assert any(line.startswith('CMD ["serve"') for line in instructions)
    # What it copies is what the package needs to install.
    for needed in ("pyproject.toml", "exec_runtime", "protocol_schema"):
        assert re.search(rf"^COPY .*\b{needed}\b", text, re.M), needed
