"""Renders charts/stator with the real Helm engine (helm-python-sdk) and checks the objects: the
default install and non-default values, lint, least-privilege RBAC with a reason on every rule,
the hardened security context, and that the chart ships the generated CRD unchanged."""
import tomllib
from pathlib import Path

import helm_python as helm  # PyPI: helm-python-sdk, a real Helm v4 engine
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "stator"
# The one version source: the workspace's. The chart's appVersion, its default images and the examples follow it.
VERSION = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["package"]["version"]


def render(values=None, namespace="stator-system"):
    chart = helm.Chart.load(str(CHART))
    out = chart.render(values or {}, name="stator", namespace=namespace, is_install=True)
    docs = []
    for path in sorted(out):
        if path.endswith(".yaml"):
            docs.extend(d for d in yaml.safe_load_all(out[path]) if d)
    return docs


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def test_default_install_renders_operator_with_cluster_wide_least_privilege():
    docs = render()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Role", "RoleBinding", "Service", "ServiceAccount"]
    deploy = by_kind(docs, "Deployment")[0]
    assert deploy["metadata"]["namespace"] == "stator-system"
    pod = deploy["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["image"] == f"ghcr.io/stator/stator-operator:{VERSION}"
    assert c["args"] == ["run"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert "STATOR_WATCH_NAMESPACES" not in env, "no namespace named: the operator watches every namespace"
    assert env["STATOR_SIDECAR_IMAGE"] == f"ghcr.io/stator/stator-sidecar:{VERSION}"
    assert env["STATOR_LEADER_ELECTION"] == "true"
    assert "STATOR_ALLOW_FILE_LOCATIONS" not in env, "file:// locations are refused on a cluster"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    rules = by_kind(docs, "ClusterRole")[0]["rules"]
    verbs = {(r["apiGroups"][0], res): set(r["verbs"]) for r in rules for res in r["resources"]}
    assert verbs[("", "secrets")] == {"get", "create"}, "no list/watch of Secrets"
    assert "delete" not in verbs[("stator.dev", "streamjobs")]
    assert not any("*" in r["verbs"] or "*" in r["resources"] for r in rules)
    lease_role = by_kind(docs, "Role")[0]
    assert lease_role["metadata"]["namespace"] == "stator-system"
    assert lease_role["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}]


def test_watch_namespaces_gives_roles_per_namespace_and_nothing_cluster_wide():
    docs = render({"watchNamespaces": ["team-a", "team-b"], "replicas": 2, "logLevel": "debug", "allowFileLocations": True,
                   "sidecarImage": "registry.local/sidecar:9", "metrics": {"service": {"enabled": False}}})
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in by_kind(docs, "Role")}
    assert ("team-a", "stator") in roles and ("team-b", "stator") in roles
    assert ("stator-system", "stator-leader-election") in roles
    bindings = by_kind(docs, "RoleBinding")
    assert all(b["subjects"][0]["namespace"] == "stator-system" for b in bindings)
    deploy = by_kind(docs, "Deployment")[0]
    assert deploy["spec"]["replicas"] == 2
    env = {e["name"]: e.get("value") for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["STATOR_WATCH_NAMESPACES"] == "team-a,team-b"
    assert env["STATOR_LOG"] == "debug"
    assert env["STATOR_SIDECAR_IMAGE"] == "registry.local/sidecar:9"
    assert env["STATOR_ALLOW_FILE_LOCATIONS"] == "true"
    assert not by_kind(docs, "Service")


def test_every_rbac_rule_says_why():
    text = (CHART / "templates" / "_helpers.tpl").read_text() + (CHART / "templates" / "rbac.yaml").read_text()
    lines = text.splitlines()
    rule_starts = [i for i, l in enumerate(lines) if l.strip().startswith("- apiGroups:")]
    assert len(rule_starts) >= 7
    for i in rule_starts:
        assert lines[i - 1].strip().startswith("#"), f"rule at line {i + 1} has no comment: {lines[i]}"


def test_chart_lints_and_ships_the_generated_crd():
    report = helm.lint(str(CHART), strict=True)
    assert report["errors"] == [], report
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], report["messages"]
    chart_crd = yaml.safe_load((CHART / "crds" / "streamjob.yaml").read_text())
    repo_crd = yaml.safe_load((REPO / "crds" / "streamjob.yaml").read_text())
    assert chart_crd == repo_crd, "charts/stator/crds/streamjob.yaml must equal crds/streamjob.yaml"


def test_bad_values_are_refused_by_the_schema():
    with pytest.raises(Exception) as e:
        render({"replicas": 0})
    assert "replicas" in str(e.value)


@pytest.mark.parametrize("values", [
    {},
    {"watchNamespaces": ["NS-A", "NS-B"], "replicas": 2},
    {"leaderElection": {"enabled": False}, "metrics": {"service": {"enabled": False}}},
], ids=["defaults", "watch-namespaces", "no-leader-election-no-service"])
def test_the_real_api_server_accepts_every_rendering_without_pod_security_warnings(cluster, values):
    """Each rendering, applied with a server-side dry run into namespaces that enforce `restricted`, passes
    the real API server's validation and admission, and its pod template draws no Pod Security warning."""
    from harness import render_chart  # noqa: PLC0415
    ns = cluster.create_namespace("chart")
    others = [cluster.create_namespace("chart") for _ in values.get("watchNamespaces", [])]
    if others:
        values = dict(values, watchNamespaces=others)
    try:
        rendered = render_chart(str(CHART), f"stator-{ns}", ns, values)
        r = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered["manifests"])
        assert "Warning" not in r.stderr, r.stderr
        created = [line for line in r.stdout.splitlines() if "(server dry run)" in line]
        assert len(created) == len(rendered["objects"]), r.stdout
    finally:
        for n in [ns, *others]:
            cluster.delete_namespace(n)


def test_a_rendering_that_drops_the_hardening_draws_a_pod_security_warning(cluster):
    """The check above can fail: without the chart's security contexts, the same dry run warns."""
    from harness import render_chart  # noqa: PLC0415
    ns = cluster.create_namespace("chart")
    try:
        rendered = render_chart(str(CHART), f"stator-{ns}", ns, {"securityContext": None, "podSecurityContext": None})
        r = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered["manifests"])
        assert 'would violate PodSecurity "restricted:latest"' in r.stderr, r.stderr
    finally:
        cluster.delete_namespace(ns)


def test_the_chart_the_examples_and_the_images_carry_the_workspace_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == VERSION, "Chart.yaml appVersion moves with the workspace version (Cargo.toml)"
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"ARG VERSION={VERSION}" in dockerfile, "the images' version label"
    for path in sorted((REPO / "examples").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            for image in _images(doc):
                if image.startswith("ghcr.io/stator/"):
                    assert image.endswith(f":{VERSION}"), f"{path.relative_to(REPO)} names {image}"


def _images(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "image" and isinstance(v, str):
                yield v
            else:
                yield from _images(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _images(v)
