"""The Prometheus rules (deploy/observability/prometheus) pass promtool's checks and unit tests;
the rules and the Grafana dashboard name only series a running Tender exports (scraped from
`tender dev` after a payment, a refund and a refused webhook) or that the rules record."""
import json
import pathlib
import re
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "support"))

from tender_dev import tender_dev  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
RULES = OBSERVABILITY / "prometheus" / "tender.rules.yml"
# PromQL words that look like series names.
PROMQL = {
    "sum", "by", "rate", "increase", "histogram_quantile", "max", "min", "and", "or", "unless", "time", "le",
    "without", "count", "avg", "on", "ignoring", "group_left", "group_right", "bool", "offset", "inf", "nan",
}


def promtool(*arguments):
    executable = shutil.which("promtool")
    assert executable, "promtool is needed (Debian's prometheus package; deploy/setup.sh installs it)"
    return subprocess.run([executable, *arguments], capture_output=True, text=True, timeout=120, cwd=RULES.parent)


def test_rules_check_and_unit_tests_pass():
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "tender.rules.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout + tested.stderr


def test_every_alert_is_unit_tested_and_has_a_runbook_section():
    rules = yaml.safe_load(RULES.read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]
    tests = yaml.safe_load((RULES.parent / "tender.rules.test.yml").read_text())
    firing = {
        case["alertname"] for test in tests["tests"] for case in test.get("alert_rule_test", []) if case["exp_alerts"]}
    runbook = (ROOT / "deploy" / "RUNBOOK.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in runbook.splitlines() if line.startswith("## ")}
    for alert in alerts:
        assert alert["alert"] in firing, f"{alert['alert']} is never seen firing in the unit tests"
        assert alert["labels"]["severity"] in ("page", "warning")
        link = alert["annotations"]["runbook"]
        assert link.startswith("deploy/RUNBOOK.md#") and link.split("#")[1] in anchors, link


def expressions():
    """(where, PromQL) of every rule and dashboard target."""
    rules = yaml.safe_load(RULES.read_text())
    found = [(rule.get("record") or rule["alert"], rule["expr"]) for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((OBSERVABILITY / "grafana" / "tender-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append((f"panel '{panel['title']}'", target["expr"]))
    return found


def series_names(expression):
    without_strings = re.sub(r'"[^"]*"', '""', expression)
    without_labels = re.sub(r"\{[^}]*\}", "", without_strings)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_labels)
    without_grouping = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", without_ranges)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_grouping))
    return {n for n in names if n.lower() not in PROMQL and not re.fullmatch(r"\d+", n)}


@pytest.fixture(scope="module")
def exported():
    """The series names of a live `tender dev`'s /metrics after some traffic."""
    with tender_dev() as server:
        command = [server["binary"], "--target", server["target"], "--ca-file", str(server["ca"]),
                   "--credentials", str(server["state"] / "dev-client.json"), "--json"]

        def cli(*arguments):
            done = subprocess.run([command[0], *arguments, *command[1:]], capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, (arguments, done.stdout, done.stderr)
            return json.loads(done.stdout)

        payment = cli("payments", "create", "--amount", "12.34", "--currency", "EUR", "--payment-method", "pm_card_visa",
                      "--capture", "automatic")
        cli("refunds", "create", payment["payment_id"], "--amount-minor", "100")
        context = ssl.create_default_context(cafile=str(server["ca"]))
        request = urllib.request.Request(
            server["bridge"] + "/webhooks/stripe", data=b"{}", method="POST",
            headers={"Stripe-Signature": "t=1,v1=00", "Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(request, context=context, timeout=10)
        with urllib.request.urlopen(server["bridge"] + "/metrics", context=context, timeout=10) as response:
            text = response.read().decode()
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names |= {name + suffix for suffix in ("_bucket", "_sum", "_count")} if kind == "histogram" else {name}
    assert "tender_payments_total" in names and "tender_refunds_total" in names
    return names | {"up"}


def test_rules_and_dashboard_name_only_exported_series(exported):
    rules = yaml.safe_load(RULES.read_text())
    recorded = {rule["record"] for group in rules["groups"] for rule in group["rules"] if "record" in rule}
    unknown = []
    for where, expression in expressions():
        for name in series_names(expression) - recorded - exported:
            unknown.append(f"{where}: {name}")
    assert not unknown, unknown


def test_the_name_check_sees_a_misspelt_series():
    assert series_names('sum by (kind) (rate(tender_paymnets_total{job="tender", status="x"}[5m])) > 0') == {
        "tender_paymnets_total"}


def test_otel_collector_configuration_is_complete():
    configuration = yaml.safe_load((OBSERVABILITY / "otel-collector.yaml").read_text())
    components = {kind: set(configuration[kind]) for kind in ("receivers", "processors", "exporters")}
    for name, pipeline in configuration["service"]["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            assert set(pipeline[kind]) <= components[kind], (name, kind)
    assert configuration["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(":4317")
