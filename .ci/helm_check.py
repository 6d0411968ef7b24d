"""Lints charts/weir and charts/weir-operator (strict) and renders weir-operator with its
default values and with the options that change its shape, checking what comes out."""

import sys

import helm_python as helm
import yaml

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


for chart in ["charts/weir", "charts/weir-operator"]:
    report = helm.lint(chart, strict=True, kube_version="v1.34.0")
    problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    problems += report.get("errors") or []
    for p in problems:
        print(f"{chart}: {p}")
    check(not problems, f"helm lint --strict {chart}")


def render(values):
    chart = helm.Chart.load("charts/weir-operator")
    out = chart.render(values, name="weir", namespace="weir-system", is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def kinds(docs):
    return sorted(f"{d['kind']}/{d['metadata'].get('namespace', '-')}/{d['metadata']['name']}" for d in docs)


def env(docs):
    dep = next(d for d in docs if d["kind"] == "Deployment")
    return {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}


default = render({})
print("default:", kinds(default))
check(
    kinds(default)
    == [
        "ClusterRole/-/weir-weir-operator",
        "ClusterRoleBinding/-/weir-weir-operator",
        "Deployment/weir-system/weir-weir-operator",
        "Service/weir-system/weir-weir-operator-metrics",
        "ServiceAccount/weir-system/weir-weir-operator",
    ],
    "default render: cluster-wide rights, one replica, metrics Service",
)
check(env(default)["WATCH_NAMESPACES"] == "", "default: all namespaces")
check(env(default)["WEIR_OPERATOR_LEADER_ELECTION"] == "false", "default: no election")
role = next(d for d in default if d["kind"] == "ClusterRole")
resources = sorted(r for rule in role["rules"] for r in rule["resources"])
verbs = {r: sorted(rule["verbs"]) for rule in role["rules"] for r in rule["resources"]}
check(verbs.get("secrets") == ["get"], "Secrets: get only (a StreamJob's S3 credentials)")
check(verbs.get("pods") == ["list"], "pods: list only (dispose waits for them to be gone)")
check("leases" in resources, "rights on Leases (granted on to JobManagers)")

ha = render({"replicas": 2, "watchNamespaces": ["team-a", "team-b"],
             "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}})
print("ha:", kinds(ha))
check("ClusterRoleBinding/-/weir-weir-operator" not in kinds(ha), "namespace list: no cluster-wide binding")
check({"RoleBinding/team-a/weir-weir-operator", "RoleBinding/team-b/weir-weir-operator",
       "Role/weir-system/weir-weir-operator-leader-election",
       "ServiceMonitor/weir-system/weir-weir-operator"} <= set(kinds(ha)),
      "namespace list: bindings per namespace, election Role, ServiceMonitor")
check(env(ha)["WATCH_NAMESPACES"] == "team-a,team-b", "namespace list passed on")
check(env(ha)["WEIR_OPERATOR_LEADER_ELECTION"] == "true", "two replicas elect a leader")
sm = next(d for d in ha if d["kind"] == "ServiceMonitor")
check(sm["metadata"]["labels"].get("release") == "prom", "ServiceMonitor labels")

crd = yaml.safe_load(open("charts/weir-operator/crds/streamjob.yaml"))
check(crd["spec"]["names"]["kind"] == "StreamJob", "the chart carries the StreamJob CRD")

if failures:
    sys.exit(f"{len(failures)} chart check(s) failed")
print("charts lint and render as expected")
