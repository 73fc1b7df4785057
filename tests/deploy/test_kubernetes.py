"""The Kubernetes manifests (deploy/kubernetes): the base and the production overlay render with
kustomize, every object validates against the Kubernetes API's schemas offline (strict: no
unknown fields), and the settings that must agree with Tender's behaviour do."""
import copy
import pathlib
import re
import shutil
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "support"))

from tender_dev import binary  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
# Kubernetes versions the manifests are checked against (the preStop sleep action needs 1.30 or later).
VERSIONS = ["1.30.0", "1.37.0"]


def render(path):
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl 1.21 or later is needed to render the manifests (deploy/setup.sh says so when it is missing)"
    done = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [document for document in yaml.safe_load_all(done.stdout) if document]


def validate(document, version):
    kubernetes_validate.validate(document, version, strict=True)


@pytest.fixture(scope="module")
def production():
    return render(KUBERNETES / "overlays" / "production")


def find(documents, kind, name=None):
    found = [d for d in documents if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert found, (kind, name)
    return found[0]


def duration_seconds(text):
    value, unit = re.fullmatch(r"(\d+)(ms|s|m|h)", text).groups()
    return int(value) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("target", ["base", "overlays/production"])
def test_every_object_validates(target, version):
    documents = render(KUBERNETES / target)
    kinds = sorted(d["kind"] for d in documents)
    for kind in ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Job", "NetworkPolicy",
                 "PodDisruptionBudget", "Service", "ServiceAccount"]:
        assert kind in kinds, kind
    for document in documents:
        validate(document, version)
    for document in yaml.safe_load_all((KUBERNETES / "base" / "secrets.example.yaml").read_text()):
        validate(document, version)


def test_the_validator_refuses_what_kubernetes_would(production):
    """Each edit is one Kubernetes refuses (an unknown field, a wrong type, a missing required
    field); the validation must refuse it too, or it proves nothing. (The schemas carry no enums:
    a wrong probe scheme, say, is only caught by the API server.)"""
    deployment = find(production, "Deployment", "tender")
    edits = [
        lambda d: d["spec"]["template"]["spec"]["containers"][0].update(imagePullPolcy="Always"),
        lambda d: d["spec"].update(replicas="three"),
        lambda d: d["spec"].pop("selector"),
        lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name"),
    ]
    for edit in edits:
        broken = copy.deepcopy(deployment)
        edit(broken)
        with pytest.raises(kubernetes_validate.ValidationError):
            validate(broken, VERSIONS[-1])


def test_deployment_matches_how_tender_drains_and_probes(production):
    deployment = find(production, "Deployment", "tender")
    config = find(production, "ConfigMap", "tender-config")["data"]
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert spec["replicas"] == 3
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert container["args"] == ["serve"]
    assert container["image"] == "registry.example.com/payments/tender:0.1.0"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"grpc": 8443, "http": 8080}
    assert config["TENDER_GRPC_ADDRESS"].endswith(":8443") and config["TENDER_HTTP_ADDRESS"].endswith(":8080")
    for probe, path in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")]:
        assert container[probe]["httpGet"] == {"path": path, "port": "http", "scheme": "HTTPS"}, probe
    # preStop, then the drain delay, then the longest in-flight RPC (the default deadline) must
    # fit in the grace period, or Kubernetes kills RPCs mid-flight.
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = duration_seconds(config["TENDER_DRAIN_DELAY"])
    deadline = duration_seconds(config.get("TENDER_DEFAULT_DEADLINE", "30s"))
    assert pre_stop > 0 and drain > 0
    assert pre_stop + drain + deadline < pod["terminationGracePeriodSeconds"]
    # Readiness turns 503 within the drain delay: probed at least twice in it.
    readiness = container["readinessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= drain
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    assert set(container["resources"]) == {"requests", "limits"}
    assert pod["automountServiceAccountToken"] is False


def test_secrets_are_files_and_settings_are_tenders(production):
    """Every variable is one of `tender serve`'s; secrets come only as *_FILE paths into a mounted
    Secret, and each names a key of that Secret."""
    help_text = subprocess.run([binary(), "serve", "--help"], capture_output=True, text=True, timeout=30).stdout
    known = set(re.findall(r"\$(TENDER_[A-Z0-9_]+)", help_text))
    deployment = find(production, "Deployment", "tender")
    job = find(production, "Job", "tender-migrate")
    config = find(production, "ConfigMap", "tender-config")["data"]
    secrets = yaml.safe_load_all((KUBERNETES / "base" / "secrets.example.yaml").read_text())
    keys = {s["metadata"]["name"]: set(s["stringData"]) for s in secrets}
    assert set(config) <= known, set(config) - known
    for pod, expected in [(deployment["spec"]["template"]["spec"], 6), (job["spec"]["template"]["spec"], 1)]:
        container = pod["containers"][0]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        files = [e for e in container["env"] if e["name"].endswith("_FILE")]
        assert len(files) == expected
        for variable in container["env"]:
            if variable["name"].endswith("_FILE"):
                assert variable["name"] in known, variable["name"]
                folder, key = variable["value"].rsplit("/", 1)
                secret = volumes[mounts[folder]]["secret"]["secretName"]
                assert key in keys[secret], (variable, secret)
            else:
                assert "value" not in variable, f"{variable['name']}: no literal values, secrets least of all"
    for path in ["TENDER_TLS_CERT", "TENDER_TLS_KEY"]:
        assert config[path].startswith("/etc/tender/tls/")
    # No password in the URLs: they come from the mounted files.
    assert not re.search(r"//[^/@]*:[^/@]*@", config["TENDER_DATABASE_URL"] + config["TENDER_REDIS_URL"])
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]


def test_service_budget_autoscaler_and_network_policy(production):
    service = find(production, "Service", "tender")
    assert {p["name"]: p.get("appProtocol") for p in service["spec"]["ports"]} == {"grpc": "grpc", "http": "https"}
    budget = find(production, "PodDisruptionBudget", "tender")
    assert budget["spec"]["maxUnavailable"] == 1
    autoscaler = find(production, "HorizontalPodAutoscaler", "tender")
    assert autoscaler["spec"]["minReplicas"] == 3 and autoscaler["spec"]["scaleTargetRef"]["name"] == "tender"
    policy = find(production, "NetworkPolicy", "tender")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert {53, 5432, 443, 4317} <= egress_ports
    namespace = find(production, "Namespace", "tender")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for document in production:
        if document["kind"] not in ("Namespace", "PriorityClass"):
            assert document["metadata"]["namespace"] == "tender", document["metadata"]["name"]


def test_yaml_is_clean():
    """yamllint over every deployment file: duplicate keys above all, which parsers resolve
    silently to the last one (an env variable or a probe setting quietly lost)."""
    executable = shutil.which("yamllint")
    assert executable, "yamllint is needed (deploy/setup.sh installs it)"
    config = ROOT / "deploy" / ".yamllint.yaml"
    done = subprocess.run([executable, "-f", "parsable", "-c", str(config), str(KUBERNETES),
                           str(ROOT / "deploy" / "observability")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = subprocess.run([executable, "-c", str(config), "-"], input="a: 1\nb: 2\na: 3\n", capture_output=True,
                            text=True, timeout=60)
    assert broken.returncode != 0 and "duplication of key" in broken.stdout
