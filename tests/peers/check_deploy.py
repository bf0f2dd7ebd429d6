"""Checks the deployment files without a cluster or a Docker engine.

python check_deploy.py [--verbose]

  lint          helm lint of charts/mcpgw (default and production values): no error, no warning
  render        the chart rendered for several value sets; every manifest valid against the Kubernetes
                KUBE_VERSION schemas (strict: unknown fields refused; CRD kinds only checked for apiVersion,
                kind and metadata.name), and consistent with itself and with the binaries: probes on their
                real endpoints, MCPGW_* variables the binaries read, hardened pods, Services whose ports
                and selectors match a workload, Secret keys that exist
  schema        values.schema.json (and the templates' own checks) refuse bad values
  dashboard     dashboards/mcpgw.json is valid JSON and uses only metrics the binaries register
  hadolint      docker/*.Dockerfile lint clean with the repository's .hadolint.yaml; builder on the
                workspace's Rust version, distroless non-root runtime, exec-form HEALTHCHECK
  compose       docker/compose.yaml valid against the Compose Specification schema (vendored in
                check-jsonschema as vendor.compose-spec), both proxies with the same valid session key and
                the control plane's proxy token, depends_on conditions that can be met

Prints one line per check and a summary; exit status 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import kubernetes_validate
import yaml
from helm_python.chart import Chart, lint
from helm_python.errors import HelmError

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "mcpgw"
DOCKER = ROOT / "docker"
VENV_BIN = Path(sys.executable).parent
KUBE_VERSION = "1.30.0"
# Custom resources kubernetes-validate has no schema for.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("gateway.networking.k8s.io/v1", "HTTPRoute")}
WORKLOADS = {"Deployment", "StatefulSet", "Job"}

# What the binaries serve and read, from their sources: the chart and the compose file must use these.
PROXY_CONFIG = ROOT / "proxy" / "src" / "config.rs"
CONTROL_PLANE_CONFIG = ROOT / "control-plane" / "src" / "config.rs"
PROXY_ADMIN = ROOT / "proxy" / "src" / "admin.rs"
CONTROL_PLANE_ROUTES = ROOT / "control-plane" / "src" / "api" / "mod.rs"
METRICS = [ROOT / "proxy" / "src" / "metrics.rs", ROOT / "control-plane" / "src" / "metrics.rs"]

# Value sets rendered by `render`, each as an install and as an upgrade; `lint` takes the first two.
SCENARIOS: dict[str, dict[str, Any]] = {
    "default": {},
    "production": yaml.safe_load((CHART / "ci" / "production-values.yaml").read_text()),
    "in-chart databases, routes, discovery, IdP": {
        "postgresql": {"enabled": True},
        "redis": {"enabled": True},
        "discovery": {"kubernetes": {"enabled": True, "namespaces": ["mcp-servers", "tools"]}},
        "httpRoute": {
            "proxy": {"enabled": True, "parentRefs": [{"name": "public", "namespace": "gateways"}],
                      "hostnames": ["mcp.example.com"]},
            "controlPlane": {"enabled": True, "parentRefs": [{"name": "public", "namespace": "gateways"}],
                             "hostnames": ["auth.example.com"]},
        },
        "serviceMonitor": {"enabled": True},
        "dashboard": {"enabled": True},
        "controlPlane": {"oidc": {"issuer": "https://idp.example.com", "clientId": "mcpgw"}},
        "secrets": {"oidcClientSecret": "s3cret"},
    },
    "cluster-wide discovery, no policy, no spill": {
        "discovery": {"kubernetes": {"enabled": True, "allNamespaces": True}},
        "networkPolicy": {"enabled": False},
        "migration": {"enabled": False},
        "proxy": {"tableCache": False, "audit": {"enabled": False},
                  "serviceAccount": {"create": False, "name": "mcp-proxy"}},
        "controlPlane": {"serviceAccount": {"create": False}},
        "externalRedis": {"url": "rediss://redis.internal:6380"},
    },
    "database CIDRs, ingress without TLS": {
        "networkPolicy": {"egress": {"databaseCidrs": ["10.0.5.0/24", "fd00:5::/64"]}},
        "ingress": {"proxy": {"enabled": True}, "controlPlane": {"enabled": True}},
        "fullnameOverride": "gw",
    },
}

# Values the chart must refuse: (what, values, text the error must contain).
BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("negative replicas", {"proxy": {"replicas": -1}}, "/proxy/replicas"),
    ("unknown log format", {"logFormat": "xml"}, "/logFormat"),
    ("port as a string", {"proxy": {"service": {"port": "8080"}}}, "/proxy/service/port"),
    ("unknown top-level key", {"replicaCount": 3}, "replicaCount"),
    ("unknown nested key", {"controlPlane": {"replica": 2}}, "replica"),
    ("unknown audit overflow", {"proxy": {"audit": {"overflow": "block"}}}, "/proxy/audit/overflow"),
    ("short proxy token", {"secrets": {"proxyToken": "short"}}, "/secrets/proxyToken"),
    ("session key of 16 bytes", {"secrets": {"sessionKey": "AAECAwQFBgcICQoLDA0ODw=="}},
     "/secrets/sessionKey"),
    ("boolean as a string", {"networkPolicy": {"enabled": "yes"}}, "/networkPolicy/enabled"),
    ("no autoscaling floor", {"proxy": {"autoscaling": {"minReplicas": 0}}},
     "/proxy/autoscaling/minReplicas"),
    ("non-PostgreSQL database URL", {"externalDatabase": {"url": "mysql://db/mcpgw"}},
     "/externalDatabase/url"),
    ("bad duration", {"proxy": {"gracePeriod": "5 seconds"}}, "/proxy/gracePeriod"),
    ("OTLP endpoint without a scheme", {"tracing": {"otlpEndpoint": "collector:4318"}}, "/tracing/otlpEndpoint"),
    ("sample ratio over 1", {"tracing": {"sampleRatio": 2}}, "/tracing/sampleRatio"),
    ("ingress host without paths", {"ingress": {"proxy": {"hosts": [{"host": "a.example"}]}}}, "paths"),
    ("HTTPRoute without a Gateway", {"httpRoute": {"proxy": {"enabled": True}}}, "parentRefs are required"),
    ("IdP without its client secret",
     {"controlPlane": {"oidc": {"issuer": "https://idp.example", "clientId": "x"}}},
     "secrets.oidcClientSecret is required"),
]


@dataclass
class Check:
    name: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def fail(self, problem: str) -> None:
        self.problems.append(problem)


def env_names(config: Path) -> set[str]:
    """Every MCPGW_* name quoted in a binary's settings: `config.rs` and its submodules (tests aside), and
    the shared `mcpgw_proto` modules they use (flattened flag sets such as `otlp::Args`)."""
    paths = [config, *sorted(p for p in config.with_suffix("").glob("*.rs") if p.name != "tests.rs")]
    shared = {m for p in paths for m in re.findall(r"mcpgw_proto::([a-z_]+)::", p.read_text())}
    paths += [ROOT / "proto" / "src" / f"{m}.rs" for m in sorted(shared) if (ROOT / "proto" / "src" / f"{m}.rs").exists()]
    return {m for p in paths for m in re.findall(r'"(MCPGW_[A-Z0-9_]+)"', p.read_text())}


def subcommands(path: Path) -> set[str]:
    """The subcommands of a binary: the variants of its clap `Command` enum, in kebab case."""
    body = re.search(r"pub enum Command \{(.*?)\n\}", path.read_text(), re.S)
    variants = re.findall(r"^\s{4}([A-Z][A-Za-z]*)\b", body.group(1) if body else "", re.M)
    return {re.sub(r"(?<!^)([A-Z])", r"-\1", v).lower() for v in variants}


PROXY_ENV = env_names(PROXY_CONFIG)
CONTROL_PLANE_ENV = env_names(CONTROL_PLANE_CONFIG)
PROXY_ROUTES = set(re.findall(r'"(/[a-z]+)"\s*=>', PROXY_ADMIN.read_text()))
CONTROL_PLANE_PUBLIC_ROUTES = set(re.findall(r'resource\("(/[a-z]+)"\)', CONTROL_PLANE_ROUTES.read_text()))
COMMANDS = {"proxy": subcommands(PROXY_CONFIG), "control-plane": subcommands(CONTROL_PLANE_CONFIG)}


def render(chart: Chart, values: dict[str, Any], **opts: Any) -> list[tuple[str, dict[str, Any]]]:
    """(template, object) of every manifest the chart renders for `values`."""
    out = chart.render(values=values, name=opts.pop("name", "mcpgw"), namespace="mcpgw", **opts)
    docs = []
    for template, text in sorted(out.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                docs.append((template.split("/", 1)[-1], doc))
    return docs


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc.get("kind") in WORKLOADS:
        return doc["spec"]["template"]["spec"]
    return None


def check_manifest(check: Check, where: str, doc: dict[str, Any]) -> None:
    """Kubernetes schema (strict) for built-in kinds; the identifying fields for custom resources."""
    kind, api = doc.get("kind"), doc.get("apiVersion")
    if (api, kind) in CRD_KINDS:
        if not (doc.get("metadata") or {}).get("name") or not doc.get("spec"):
            check.fail(f"{where}: {kind} without metadata.name or spec")
        return
    try:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        check.fail(f"{where}: {path}: {e.message}")
    except kubernetes_validate.SchemaNotFoundError as e:
        check.fail(f"{where}: {e.message}")


def check_pod(check: Check, where: str, doc: dict[str, Any], secrets: dict[str, set[str]]) -> None:
    """Hardening, probes on real endpoints, variables the binary reads, Secret keys that exist."""
    spec = pod_spec(doc)
    if spec is None:
        return
    component = doc["metadata"]["labels"].get("app.kubernetes.io/component")
    pod_sc = spec.get("securityContext", {})
    if not pod_sc.get("runAsNonRoot") or pod_sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        check.fail(f"{where}: pod securityContext lacks runAsNonRoot or seccomp RuntimeDefault")
    binary = "control-plane" if component == "migration" else component
    for c in spec["containers"]:
        if binary in COMMANDS and c.get("args", [""])[0] not in COMMANDS[binary]:
            check.fail(f"{where}: mcpgw-{binary} has no subcommand {c.get('args')}")
        sc = c.get("securityContext", {})
        if not (sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False
                and sc.get("capabilities", {}).get("drop") == ["ALL"]):
            check.fail(f"{where}: container {c['name']} not read-only, unprivileged, without capabilities")
        if "resources" not in c:
            check.fail(f"{where}: container {c['name']} has no resources")
        known = {"proxy": PROXY_ENV, "control-plane": CONTROL_PLANE_ENV}.get(binary)
        for env in c.get("env", []):
            if known is not None and env["name"].startswith("MCPGW_") and env["name"] not in known:
                check.fail(f"{where}: {env['name']} is read by no binary")
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            rendered = secrets.get(ref["name"]) if ref else None
            if rendered is not None and not ref.get("optional") and ref["key"] not in rendered:
                check.fail(f"{where}: {env['name']} needs key {ref['key']} missing from Secret {ref['name']}")
        routes = {"proxy": PROXY_ROUTES, "control-plane": CONTROL_PLANE_PUBLIC_ROUTES}.get(component)
        if routes is not None:
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                path = c.get(probe, {}).get("httpGet", {}).get("path")
                if path not in routes:
                    check.fail(f"{where}: {probe} on {path!r}, not a route of the binary {sorted(routes)}")


def check_wiring(check: Check, scenario: str, docs: list[tuple[str, dict[str, Any]]]) -> None:
    """Services select a workload and target its named ports; HPAs, PDBs, NetworkPolicies and
    ServiceMonitors find theirs."""
    pods = []  # (labels, container port names)
    deployments = set()
    services = {}
    for _, doc in docs:
        spec = pod_spec(doc)
        if spec is not None and doc["kind"] != "Job":
            ports = {p["name"] for c in spec["containers"] for p in c.get("ports", []) if "name" in p}
            pods.append((doc["spec"]["template"]["metadata"]["labels"], ports))
        if doc["kind"] == "Deployment":
            deployments.add(doc["metadata"]["name"])

    def selected(selector: dict[str, str]) -> list[set[str]]:
        return [ports for labels, ports in pods if selector.items() <= labels.items()]

    for template, doc in docs:
        where = f"{scenario}: {template} {doc['kind']}/{doc['metadata']['name']}"
        kind = doc["kind"]
        if kind == "Service":
            services[doc["metadata"]["name"]] = doc
            matches = selected(doc["spec"]["selector"])
            if not matches:
                check.fail(f"{where}: selects no pod")
            for port in doc["spec"]["ports"]:
                if not all(port["targetPort"] in ports for ports in matches):
                    check.fail(f"{where}: targetPort {port['targetPort']} is not a container port")
        elif kind == "HorizontalPodAutoscaler" and doc["spec"]["scaleTargetRef"]["name"] not in deployments:
            check.fail(f"{where}: scales a Deployment the chart does not make")
        elif kind == "PodDisruptionBudget" and not selected(doc["spec"]["selector"]["matchLabels"]):
            check.fail(f"{where}: selects no pod")
        elif kind == "NetworkPolicy" and not selected(doc["spec"]["podSelector"]["matchLabels"]):
            check.fail(f"{where}: applies to no pod")
    for template, doc in docs:
        if doc["kind"] != "ServiceMonitor":
            continue
        where = f"{scenario}: {template} ServiceMonitor/{doc['metadata']['name']}"
        want = doc["spec"]["selector"]["matchLabels"]
        hits = [s for s in services.values() if want.items() <= s["metadata"]["labels"].items()]
        if len(hits) != 1:
            check.fail(f"{where}: selects {len(hits)} Services, not 1")
        for endpoint in doc["spec"]["endpoints"]:
            if not all(endpoint["port"] in {p["name"] for p in s["spec"]["ports"]} for s in hits):
                check.fail(f"{where}: port {endpoint['port']} missing from the Service")


def check_lint() -> Check:
    check = Check("lint")
    for label, values in (("default", {}), ("production", SCENARIOS["production"])):
        report = lint(CHART, values, kube_version=f"v{KUBE_VERSION}")
        for message in report.get("messages", []):
            if message["severity"] >= 2:
                check.fail(f"{label}: {message['path']}: {message['error'].strip()}")
        for error in report.get("errors", []):
            if not any(error.strip() in p for p in check.problems):
                check.fail(f"{label}: {error.strip()}")
        infos = [m["error"] for m in report.get("messages", []) if m["severity"] < 2]
        info = f" ({'; '.join(infos)})" if infos else ""
        check.notes.append(f"{label} values: no error or warning{info}")
    return check


def check_render(verbose: bool) -> Check:
    check = Check("render")
    counted = 0
    with Chart.load(CHART) as chart:
        for scenario, values in SCENARIOS.items():
            for upgrade in (False, True):
                label = f"{scenario}{' (upgrade)' if upgrade else ''}"
                try:
                    docs = render(chart, values, is_install=not upgrade, is_upgrade=upgrade)
                except HelmError as e:
                    check.fail(f"{label}: does not render: {e}")
                    continue
                secrets = {d["metadata"]["name"]: set(d.get("data", {}))
                           for _, d in docs if d["kind"] == "Secret"}
                for template, doc in docs:
                    where = f"{label}: {template} {doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
                    check_manifest(check, where, doc)
                    check_pod(check, where, doc, secrets)
                    if verbose:
                        print(f"  validated {where}")
                check_wiring(check, label, docs)
                hooks = {d["metadata"]["annotations"]["helm.sh/hook"] for _, d in docs
                         if d["kind"] == "Job"}
                expected = set()
                if values.get("migration", {}).get("enabled", True):
                    in_chart = values.get("postgresql", {}).get("enabled", False)
                    expected = {"pre-upgrade" if in_chart else "pre-install,pre-upgrade"}
                if hooks != expected:
                    check.fail(f"{label}: migration hooks {sorted(hooks)}, expected {sorted(expected)}")
                counted += len(docs)
    check.problems = grouped(check.problems, 2 * len(SCENARIOS))
    check.notes.append(f"{counted} manifests in {2 * len(SCENARIOS)} renders, Kubernetes {KUBE_VERSION}")
    return check


def grouped(problems: list[str], renders: int) -> list[str]:
    """`render: problem` lines folded into one line per problem, naming the renders that show it."""
    by_problem: dict[str, list[str]] = {}
    for line in problems:
        label, _, problem = line.partition(": ")
        by_problem.setdefault(problem, []).append(label)
    return [f"{problem} [{'every render' if len(labels) == renders else '; '.join(labels)}]"
            for problem, labels in by_problem.items()]


def check_schema() -> Check:
    check = Check("schema")
    with Chart.load(CHART) as chart:
        for what, values, expected in BAD_VALUES:
            try:
                chart.render(values=values, name="mcpgw", namespace="mcpgw")
            except HelmError as e:
                if expected not in str(e):
                    check.fail(f"{what}: refused, but not for {expected!r}: {str(e).strip()}")
                continue
            check.fail(f"{what}: {json.dumps(values)} was accepted")
    check.notes.append(f"{len(BAD_VALUES) - len(check.problems)} of {len(BAD_VALUES)} bad value sets refused")
    return check


def registered_metrics() -> set[str]:
    return {m for p in METRICS for m in re.findall(r'"(mcpgw_[a-z0-9_]+)"', p.read_text())}


def check_dashboard() -> Check:
    check = Check("dashboard")
    try:
        dashboard = json.loads((CHART / "dashboards" / "mcpgw.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        check.fail(f"dashboards/mcpgw.json: {e}")
        return check
    exprs = [t["expr"] for p in dashboard.get("panels", []) for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard.get("templating", {}).get("list", []) if "definition" in v]
    known = registered_metrics()
    used = set()
    for expr in exprs:
        for name in re.findall(r"\b(mcpgw_[a-z0-9_]+)", expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            used.add(base)
            if name not in known and base not in known:
                check.fail(f"{name} is registered by neither binary")
    unused = known - used
    check.notes.append(f"{len(exprs)} queries over {len(used)} of {len(known)} metrics"
                       + (f"; not shown: {', '.join(sorted(unused))}" if unused else ""))
    return check


def rust_version() -> str:
    """The images' toolchain: rust-toolchain.toml's channel, else the workspace's rust-version."""
    toolchain = ROOT / "rust-toolchain.toml"
    if toolchain.exists():
        return tomllib.loads(toolchain.read_text())["toolchain"]["channel"]
    return tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["rust-version"]


def check_hadolint() -> Check:
    check = Check("hadolint")
    dockerfiles = {"proxy": DOCKER / "proxy.Dockerfile", "control-plane": DOCKER / "control-plane.Dockerfile"}
    config = ROOT / ".hadolint.yaml"
    result = subprocess.run([str(VENV_BIN / "hadolint"), "--no-color", "--config", str(config),
                             *map(str, dockerfiles.values())], capture_output=True, text=True)
    if result.returncode != 0 or result.stdout.strip():
        check.fail(f"hadolint (exit {result.returncode}):\n{result.stdout}{result.stderr}".rstrip())
    # Every ignored rule carries its reason in a comment just above it.
    lines = config.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"\s*-\s*DL\d+", line) and (i == 0 or not lines[i - 1].strip().startswith("#")):
            check.fail(f".hadolint.yaml: {line.strip()} is ignored without a comment saying why")
    want_rust = rust_version()
    for name, path in dockerfiles.items():
        text = path.read_text()
        binary = f"/usr/local/bin/mcpgw-{name}"
        builder = "FROM rust:${RUST_VERSION}-bookworm AS builder"
        if f"ARG RUST_VERSION={want_rust}\n" not in text or builder not in text:
            check.fail(f"{path.name}: the builder is not rust:{want_rust}-bookworm")
        if f"cargo build --release --locked -p mcpgw-{name}" not in text:
            check.fail(f"{path.name}: does not build -p mcpgw-{name} --release --locked")
        stages = re.findall(r"^FROM (\S+)", text, re.M)
        if stages[-1] != "gcr.io/distroless/cc-debian12:nonroot":
            check.fail(f"{path.name}: runtime image {stages[-1]}, not distroless cc-debian12:nonroot")
        if not re.search(r"^USER 65532:65532$", text, re.M):
            check.fail(f"{path.name}: no numeric non-root USER")
        if f'CMD ["{binary}", "healthcheck"]' not in text:
            check.fail(f"{path.name}: no exec-form HEALTHCHECK running `{binary} healthcheck`")
        for command in ("healthcheck", *re.findall(r'^CMD \["([a-z-]+)"\]$', text, re.M)):
            if command not in COMMANDS[name]:
                check.fail(f"{path.name}: mcpgw-{name} has no subcommand {command!r}")
    check.notes.append(f"{len(dockerfiles)} Dockerfiles; builder rust:{want_rust}-bookworm")
    return check


def interpolated(value: str) -> str:
    """A Compose value with `${VAR:-default}` / `${VAR-default}` resolved as if VAR were unset."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", value)


def key_problem(raw: str) -> str | None:
    """Why `raw` would not be accepted as a 32-byte key (hex or base64) by the binaries, or None."""
    raw = raw.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", raw):
        key = bytes.fromhex(raw)
    else:
        try:
            # Standard or URL-safe alphabet, padded or not, as the binaries accept.
            standard = raw.replace("-", "+").replace("_", "/")
            key = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
        except (binascii.Error, ValueError):
            return "neither hex nor base64"
    if len(key) != 32:
        return f"{len(key)} bytes, not 32"
    if len(set(key)) < 12:
        return "fewer than 12 distinct bytes"
    return None


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def has_healthcheck(service: dict[str, Any]) -> bool:
    healthcheck = service.get("healthcheck") or {}
    return bool(healthcheck.get("test")) and not healthcheck.get("disable", False)


def check_compose() -> Check:
    check = Check("compose")
    path = DOCKER / "compose.yaml"
    result = subprocess.run([str(VENV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
                             str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        check.fail(f"Compose Specification schema:\n{result.stdout}{result.stderr}".rstrip())
    services = yaml.safe_load(path.read_text())["services"]

    def built_from(service: dict[str, Any]) -> str:
        return Path((service.get("build") or {}).get("dockerfile", "")).name

    proxies = {n: s for n, s in services.items() if built_from(s) == "proxy.Dockerfile"}
    planes = {n: s for n, s in services.items() if built_from(s) == "control-plane.Dockerfile"}
    if len(proxies) < 2:
        check.fail(f"{len(proxies)} proxy service(s); at least 2 share a session key")
    keys = {n: environment(s).get("MCPGW_SESSION_KEY", "") for n, s in proxies.items()}
    if len(set(keys.values())) != 1 or "" in keys.values():
        check.fail(f"the proxies' MCPGW_SESSION_KEY differ or are missing: {keys}")
    for name, raw in keys.items():
        if raw and (why := key_problem(interpolated(raw))):
            check.fail(f"{name}: MCPGW_SESSION_KEY {interpolated(raw)!r}: {why}")
    serving = [n for n, s in planes.items() if s.get("command") == ["serve"]]
    if len(serving) != 1:
        check.fail(f"{len(serving)} control plane(s) serving, not 1")
    tokens = {n: environment(services[n]).get("MCPGW_PROXY_TOKEN", "") for n in [*proxies, *serving]}
    if len(set(tokens.values())) != 1 or len(interpolated(next(iter(tokens.values()), ""))) < 16:
        check.fail(f"MCPGW_PROXY_TOKEN differs between proxies and control plane, or is short: {tokens}")
    for name, service in services.items():
        binary = "proxy" if name in proxies else "control-plane" if name in planes else None
        if binary:
            # The subcommand it runs (the image's `serve` by default) and the one its health check runs.
            commands = (service.get("command") or ["serve"])[:1]
            test = (service.get("healthcheck") or {}).get("test") or []
            commands += test[2:3] if test[:1] == ["CMD"] else []
            for command in commands:
                if command not in COMMANDS[binary]:
                    check.fail(f"{name}: mcpgw-{binary} has no subcommand {command!r}")
        known = PROXY_ENV if name in proxies else CONTROL_PLANE_ENV if name in planes else None
        for var in environment(service):
            if known is not None and var.startswith("MCPGW_") and var not in known:
                check.fail(f"{name}: {var} is read by no binary")
        depends_on = service.get("depends_on") or {}
        if isinstance(depends_on, list):
            depends_on = {dep: {"condition": "service_started"} for dep in depends_on}
        for dep, cond in depends_on.items():
            target = services.get(dep)
            if target is None:
                check.fail(f"{name}: depends on unknown service {dep}")
            elif cond.get("condition") == "service_healthy" and not has_healthcheck(target):
                check.fail(f"{name}: waits for {dep} to be healthy, which has no healthcheck")
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0]
            if source.startswith(".") and not (DOCKER / source).exists():
                check.fail(f"{name}: mounts {source}, which does not exist")
        build = service.get("build")
        if build and not (DOCKER / build["context"] / build["dockerfile"]).exists():
            check.fail(f"{name}: builds from {build['dockerfile']}, which does not exist")
    registry = yaml.safe_load((DOCKER / "registry.yaml").read_text())
    servers = registry.get("servers") if isinstance(registry, dict) else None
    if not servers:
        check.fail("registry.yaml lists no servers")
    for server in servers or []:
        if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", str(server.get("name"))):
            check.fail(f"registry.yaml: {server.get('name')!r} is not a server name")
    check.notes.append(f"{len(services)} services; proxies {', '.join(proxies)}")
    return check


CHECKS: list[Callable[..., Check]] = [check_lint, check_render, check_schema, check_dashboard, check_hadolint,
                                      check_compose]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--verbose", action="store_true", help="list every manifest validated")
    args = parser.parse_args()
    results = []
    for run in CHECKS:
        try:
            check = run(args.verbose) if run is check_render else run()
        except Exception as e:  # a broken check is a failed check, reported like the others
            check = Check(run.__name__.removeprefix("check_"))
            check.fail(f"{type(e).__name__}: {e}")
        results.append(check)
        status = "FAIL" if check.problems else "ok"
        print(f"{status:4} {check.name:9} {'; '.join(check.notes)}")
        for problem in check.problems:
            print("       - " + problem.replace("\n", "\n         "))
    failed = sum(1 for c in results if c.problems)
    print(f"deploy checks: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
