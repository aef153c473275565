#!/usr/bin/env python3
"""Checks of the deploy kit that no off-the-shelf linter does.

Called by .ci/deploy-check, one subcommand per step:

  k8s-classify            which manifests kubernetes-validate can check, which not and why
  k8s-filter IN OUT       copy a rendered multi-document manifest without custom resources
  k8s-consistency         custom resources' structure, and that the manifests, the
                          ConfigMap's TOML, the Dockerfile and .dockerignore agree
  rules-meta              every alert has summary/description/runbook_url and is tested
                          both ways (fires / stays silent) in its rule file's
                          *.rules.test.yml (deploy/prometheus/*.rules.yml)
  dashboard OUT           Grafana JSON rules; writes the dashboard's PromQL as a
                          rules file to OUT for `promtool check rules`
  anchors                 every docs/operations.md#anchor the kit links to exists
  metrics                 every wspulse_* name in the rules and the dashboard is a
                          metric the binary exposes ($WSPULSE_BIN), or else one that
                          INTERFACE.md names, and carries the labels they use

Exit status 0 when the check passes, 1 when it fails (the reasons on stderr).
Standard library plus PyYAML (installed with yamllint) only.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "wspulse.rules.yml"
RULES_TEST = PROMETHEUS / "wspulse.rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "wspulse.json"
OPERATIONS = ROOT / "docs" / "operations.md"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DOCKER_TOML = ROOT / "deploy" / "docker" / "wspulse.toml"
RUNBOOK_BASE = "https://github.com/wspulse/wspulse/blob/main/docs/operations.md#"

# Kinds that are not in the Kubernetes OpenAPI schemas kubernetes-validate ships.
CUSTOM_KINDS = {
    "PodMonitor": "custom resource (monitoring.coreos.com/v1, Prometheus Operator): "
    "not in the Kubernetes schemas; structure checked by k8s-consistency",
    "Kustomization": "kustomize's own file, not an API object: checked by rendering it "
    "(kubectl kustomize) and by k8s-consistency",
}

# Used only when INTERFACE.md cannot be found (see interface_path()).
FALLBACK_METRICS = {
    "wspulse_connections_opened_total": "counter",
    "wspulse_connections_active": "gauge",
    "wspulse_connections_closed_total": "counter",
    "wspulse_session_duration_seconds": "histogram",
    "wspulse_ping_rtt_seconds": "histogram",
    "wspulse_messages_total": "counter",
    "wspulse_message_bytes_total": "counter",
    "wspulse_upstream_connect_failures_total": "counter",
    "wspulse_handshake_rejections_total": "counter",
    "wspulse_drain_sessions_total": "counter",
    "wspulse_idle_before_close_seconds": "histogram",
}

errors: list[str] = []


def fail(msg: str) -> None:
    errors.append(msg)


def note(msg: str) -> None:
    print(f"    note: {msg}")


def finish(ok_msg: str) -> int:
    if errors:
        for e in errors:
            print(f"    FAIL: {e}", file=sys.stderr)
        return 1
    print(f"    {ok_msg}")
    return 0


def rel(p: Path) -> str:
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


def load_docs(path: Path) -> list[dict]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*") if p.suffix in (".yaml", ".yml"))


# --------------------------------------------------------------------------
# INTERFACE.md


def interface_path() -> Path | None:
    """shared/INTERFACE.md: beside the clone in CI, or where WSPULSE_INTERFACE says."""
    candidates = []
    if os.environ.get("WSPULSE_INTERFACE"):
        candidates.append(Path(os.environ["WSPULSE_INTERFACE"]))
    candidates += [ROOT.parent / "shared" / "INTERFACE.md", ROOT / "shared" / "INTERFACE.md"]
    for c in candidates:
        if c.is_file():
            return c
    return None


def interface_metrics() -> tuple[dict[str, str], str]:
    """Metric families INTERFACE.md names, with their type where its table gives one."""
    path = interface_path()
    if path is None:
        return dict(FALLBACK_METRICS), "the list built into .ci/deploy_check.py (INTERFACE.md not found)"
    text = path.read_text()
    fams: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"\|\s*`(wspulse_[a-z0-9_]+)`\s*\|\s*(counter|gauge|histogram|summary)\s*\|", line)
        if m:
            fams[m.group(1)] = m.group(2)
    for name in re.findall(r"`(wspulse_[a-z0-9_]+)", text):
        if name not in fams:
            # Named outside the table (the later issues' metrics): infer the type.
            fams[name] = "counter" if name.endswith("_total") else (
                "histogram" if name.endswith("_seconds") else "unknown")
    return fams, rel(path) if path.is_relative_to(ROOT) else str(path)


def interface_labels() -> dict[str, set[str]] | None:
    """Label names per metric family, as INTERFACE.md gives them (None without it)."""
    path = interface_path()
    if path is None:
        return None
    text = path.read_text()
    labels: dict[str, set[str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"`wspulse_[a-z0-9_]+`", cells[0]):
            name = cells[0].strip("`")
            rest = "|".join(cells[2:])
            labels[name] = {m.group(1) for part in rest.split(",")
                            if (m := re.search(r"`(\w+)`", part))}
    # `name{label}` or `name{label="a"|"b"}` mentioned in the prose.
    for name, inner in re.findall(r"`(wspulse_[a-z0-9_]+)\{([^}`]*)\}", text):
        labels.setdefault(name, set()).update(re.findall(r"(\w+)\s*(?:=|,|$)", inner))
    # "a `route` label on `a`, `b` and `c`"
    for label, names in re.findall(r"an? `(\w+)` label on ((?:`wspulse_\w+`[, and]*)+)", text):
        for name in re.findall(r"`(wspulse_\w+)`", names):
            labels.setdefault(name, set()).add(label)
    return labels


def interface_config_keys() -> dict[str, set[str]]:
    """Config sections and keys: INTERFACE.md's TOML block, plus the keys it adds later."""
    known: dict[str, set[str]] = {}
    # The repo's example file names every key wspulse accepts: a unit test
    # holds it to the binary's own key table, so it is never stale.
    example = ROOT / "config" / "wspulse.example.toml"
    if example.exists():
        def walk(table: dict, prefix: str) -> None:
            for k, v in table.items():
                if prefix:
                    known.setdefault(prefix, set()).add(k)
                if isinstance(v, dict):
                    walk(v, f"{prefix}.{k}" if prefix else k)
        walk(tomllib.loads(example.read_text()), "")
    path = interface_path()
    if path is not None:
        m = re.search(r"```toml\n(.*?)```", path.read_text(), re.S)
        if m:
            for section, keys in tomllib.loads(m.group(1)).items():
                known[section] = set(keys) if isinstance(keys, dict) else set()
    if not known:
        known = {
            "listen": {"addr"}, "upstream": {"url", "connect_timeout"},
            "keepalive": {"interval", "timeout"},
            "limits": {"max_message_size", "max_frame_size", "handshake_timeout", "max_connections"},
            "admin": {"addr"}, "shutdown": {"drain_timeout", "spread", "close_code"},
            "log": {"level", "format"},
        }
    # "Also part of the interface": admin.recent_closures and [[routes]].
    known.setdefault("admin", set()).add("recent_closures")
    # Keys the later issues add, written `section.key = default` in prose.
    if path is not None:
        for section, key in re.findall(r"`(\w+)\.(\w+)\s*=", path.read_text()):
            known.setdefault(section, set()).add(key)
    known["routes"] = {"name", "path_prefix"}
    return known


# --------------------------------------------------------------------------
# k8s-classify / k8s-filter


def cmd_k8s_classify() -> int:
    for path in manifest_files():
        kinds = {d.get("kind") for d in load_docs(path)}
        custom = sorted(k for k in kinds if k in CUSTOM_KINDS)
        if custom and len(kinds) > 1:
            print(f"mixed\t{rel(path)}\tmixes {', '.join(custom)} with other kinds")
        elif custom:
            print(f"skip\t{rel(path)}\t{CUSTOM_KINDS[custom[0]]}")
        else:
            print(f"validate\t{rel(path)}\t")
    return 0


def cmd_k8s_filter(src: str, dst: str) -> int:
    docs = load_docs(Path(src))
    keep = [d for d in docs if d.get("kind") not in CUSTOM_KINDS]
    dropped = sorted({d.get("kind") for d in docs if d.get("kind") in CUSTOM_KINDS})
    with open(dst, "w") as f:
        yaml.safe_dump_all(keep, f, sort_keys=False)
    print(f"{len(keep)} objects kept" + (f", left out: {', '.join(dropped)}" if dropped else ""))
    return 0


# --------------------------------------------------------------------------
# k8s-consistency


def parse_duration(s: str) -> float:
    """humantime subset: '250ms', '15s', '1m 30s', '2h'."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    total, pos = 0.0, 0
    for m in re.finditer(r"\s*(\d+(?:\.\d+)?)\s*(ms|sec|min|s|m|h)", s):
        if m.start() != pos:
            raise ValueError(f"bad duration {s!r}")
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise ValueError(f"bad duration {s!r}")
    return total


def parse_quantity(q: str) -> float:
    """Kubernetes memory quantity in bytes."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|K|M|G)?", str(q))
    if not m:
        raise ValueError(f"bad quantity {q!r}")
    mult = {None: 1, "K": 1e3, "M": 1e6, "G": 1e9, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
    return float(m.group(1)) * mult[m.group(2)]


def check_toml_keys(doc: dict, where: str, known: dict[str, set[str]]) -> None:
    for section, body in doc.items():
        if section not in known:
            fail(f"{where}: unknown section [{section}] (wspulse refuses unknown keys)")
            continue
        items = body if isinstance(body, list) else [body]
        for item in items:
            if not isinstance(item, dict):
                fail(f"{where}: [{section}] is not a table")
                continue
            for key in item:
                if key not in known[section]:
                    fail(f"{where}: unknown key {section}.{key} (wspulse refuses unknown keys)")


def port_of(container: dict, ref) -> int | None:
    for p in container.get("ports", []):
        if ref in (p.get("name"), p.get("containerPort")):
            return p.get("containerPort")
    return None


def check_probe(c: dict, probe: str, path: str, admin_port: int, where: str) -> None:
    get = (c.get(probe) or {}).get("httpGet")
    if not get:
        fail(f"{where}: wspulse container has no {probe} httpGet")
        return
    if get.get("path") != path:
        fail(f"{where}: {probe} path is {get.get('path')!r}, expected {path}")
    if port_of(c, get.get("port")) != admin_port:
        fail(f"{where}: {probe} does not hit the admin port {admin_port}")


def check_deployment(path: Path, native: bool, cm_toml: dict, common: dict) -> None:
    where = rel(path)
    deps = [d for d in load_docs(path) if d.get("kind") == "Deployment"]
    if len(deps) != 1:
        fail(f"{where}: expected exactly one Deployment")
        return
    dep = deps[0]
    spec = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"].get("labels", {})
    sel = dep["spec"]["selector"].get("matchLabels", {})
    if any(labels.get(k) != v for k, v in sel.items()):
        fail(f"{where}: selector does not match the pod template's labels")

    inits = spec.get("initContainers", [])
    mains = spec.get("containers", [])
    if native:
        ws = [c for c in inits if c["name"] == "wspulse"]
        if not ws:
            fail(f"{where}: no wspulse entry in initContainers (native sidecar)")
            return
        if ws[0].get("restartPolicy") != "Always":
            fail(f"{where}: the wspulse init container needs restartPolicy: Always to be a native sidecar")
    else:
        ws = [c for c in mains if c["name"] == "wspulse"]
        if not ws:
            fail(f"{where}: no wspulse entry in containers (classic sidecar)")
            return
    c = ws[0]
    apps = [x for x in mains if x["name"] != "wspulse"]
    if not apps:
        fail(f"{where}: no app container beside wspulse")
        return

    # Ports, probes.
    ws_port, admin_port = port_of(c, "ws"), port_of(c, "admin")
    if ws_port != 8080 or admin_port != 9090:
        fail(f"{where}: wspulse ports must be named ws=8080 and admin=9090, got ws={ws_port} admin={admin_port}")
        return
    check_probe(c, "livenessProbe", "/healthz", admin_port, where)
    check_probe(c, "readinessProbe", "/readyz", admin_port, where)

    # Config file: args point at the mounted ConfigMap key.
    args = c.get("args", [])
    cfg_path = args[args.index("--config") + 1] if "--config" in args else None
    if args[:1] != ["run"] or cfg_path is None:
        fail(f"{where}: wspulse args should be ['run', '--config', FILE], got {args}")
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    cm_name = common["configmap"]["metadata"]["name"]
    mounted = [n for n, v in vols.items() if (v.get("configMap") or {}).get("name") == cm_name and n in mounts]
    if not mounted:
        fail(f"{where}: the ConfigMap {cm_name} is not mounted into the wspulse container")
    elif cfg_path and cfg_path != mounts[mounted[0]].rstrip("/") + "/wspulse.toml":
        fail(f"{where}: --config {cfg_path} is not the mounted {mounts[mounted[0]]}/wspulse.toml")
    if cfg_path and cfg_path != dockerfile_config_path():
        fail(f"{where}: --config {cfg_path} differs from the Dockerfile's CMD path {dockerfile_config_path()}")

    # The TOML agrees with the pod.
    listen = cm_toml.get("listen", {}).get("addr", "")
    admin = cm_toml.get("admin", {}).get("addr", "")
    if listen != f"0.0.0.0:{ws_port}":
        fail(f"ConfigMap listen.addr {listen!r} should be 0.0.0.0:{ws_port}")
    if admin != f"0.0.0.0:{admin_port}":
        fail(f"ConfigMap admin.addr {admin!r} should be 0.0.0.0:{admin_port}")
    url = cm_toml.get("upstream", {}).get("url", "")
    m = re.fullmatch(r"wss?://127\.0\.0\.1:(\d+)(/.*)?", url)
    if not m:
        fail(f"ConfigMap upstream.url {url!r} should be ws://127.0.0.1:<app port>")
    else:
        up = int(m.group(1))
        app_ports = {p.get("containerPort") for a in apps for p in a.get("ports", [])}
        app_env = {e["name"]: e.get("value") for a in apps for e in a.get("env", [])}
        if up not in app_ports:
            fail(f"{where}: upstream port {up} is not a port of the app container ({sorted(app_ports)})")
        if "PORT" in app_env and app_env["PORT"] != str(up):
            fail(f"{where}: the app listens on PORT={app_env['PORT']} but upstream.url says {up}")

    # Shutdown budget.
    sd = cm_toml.get("shutdown", {})
    drain = parse_duration(sd.get("drain_timeout", "10s")) + parse_duration(sd.get("spread", "0s"))
    # After the drain wspulse may wait up to final_scrape for its last scrape.
    shutdown_budget = drain + parse_duration(sd.get("final_scrape", "0s"))
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if grace <= shutdown_budget:
        fail(f"{where}: terminationGracePeriodSeconds {grace} must exceed spread + drain_timeout "
             f"+ final_scrape ({shutdown_budget:g}s)")
    for a in apps:
        sleep = (((a.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
        if sleep and grace <= sleep:
            fail(f"{where}: terminationGracePeriodSeconds {grace} must exceed the app's preStop sleep {sleep}s")
        if not native and sleep < drain:
            fail(f"{where}: classic variant: the app's preStop sleep ({sleep}s) should outlast wspulse's drain ({drain:g}s)")

    # Memory request vs the stated 30 KiB/session assumption.
    req = (c.get("resources") or {}).get("requests", {}).get("memory")
    maxc = cm_toml.get("limits", {}).get("max_connections", 10000)
    if not req:
        fail(f"{where}: wspulse has no memory request")
    elif parse_quantity(req) < maxc * 30 * 1024:
        fail(f"{where}: memory request {req} is below max_connections {maxc} x 30 KiB")

    # Scrape annotations.
    ann = dep["spec"]["template"]["metadata"].get("annotations", {})
    if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != str(admin_port) \
            or ann.get("prometheus.io/path", "/metrics") != "/metrics":
        fail(f"{where}: prometheus.io/scrape|port|path annotations must point at {admin_port}/metrics")

    # Service, PodMonitor, NetworkPolicy select these pods and use the right ports.
    svc = common["service"]
    if any(labels.get(k) != v for k, v in svc["spec"].get("selector", {}).items()):
        fail(f"{where}: the Service's selector does not match the pod labels")
    for p in svc["spec"].get("ports", []):
        if port_of(c, p.get("targetPort")) != ws_port:
            fail(f"{where}: Service port {p.get('name')} targets {p.get('targetPort')!r}, not wspulse's ws port")
    pm = common["podmonitor"]
    if any(labels.get(k) != v for k, v in pm["spec"]["selector"].get("matchLabels", {}).items()):
        fail(f"{where}: the PodMonitor's selector does not match the pod labels")
    for ep in pm["spec"]["podMetricsEndpoints"]:
        if port_of(c, ep.get("port")) != admin_port:
            fail(f"{where}: PodMonitor endpoint port {ep.get('port')!r} is not wspulse's admin port")
    np = common.get("networkpolicy")
    if np:
        if any(labels.get(k) != v for k, v in np["spec"]["podSelector"].get("matchLabels", {}).items()):
            fail(f"{where}: the NetworkPolicy's podSelector does not match the pod labels")
        allowed = {p.get("port") for r in np["spec"].get("ingress", []) for p in r.get("ports", [])}
        for need in (ws_port, admin_port):
            if need not in allowed and not any(port_of(c, a) == need for a in allowed):
                fail(f"{where}: the NetworkPolicy does not admit port {need}")


def check_podmonitor(pm: dict, where: str) -> None:
    """Structure of a monitoring.coreos.com/v1 PodMonitor (the parts this kit uses)."""
    if pm.get("apiVersion") != "monitoring.coreos.com/v1":
        fail(f"{where}: apiVersion must be monitoring.coreos.com/v1")
    if not (pm.get("metadata") or {}).get("name"):
        fail(f"{where}: metadata.name missing")
    spec = pm.get("spec") or {}
    allowed_spec = {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel", "podTargetLabels",
                    "sampleLimit", "targetLimit", "labelLimit", "labelNameLengthLimit",
                    "labelValueLengthLimit", "attachMetadata", "scrapeProtocols", "scrapeClass"}
    for k in spec:
        if k not in allowed_spec:
            fail(f"{where}: unknown field spec.{k}")
    if not isinstance((spec.get("selector") or {}).get("matchLabels"), dict):
        fail(f"{where}: spec.selector.matchLabels missing")
    eps = spec.get("podMetricsEndpoints")
    if not isinstance(eps, list) or not eps:
        fail(f"{where}: spec.podMetricsEndpoints must be a non-empty list")
        return
    allowed_ep = {"port", "portNumber", "targetPort", "path", "scheme", "params", "interval", "scrapeTimeout",
                  "honorLabels", "honorTimestamps", "relabelings", "metricRelabelings", "filterRunning",
                  "followRedirects", "enableHttp2", "proxyUrl", "tlsConfig", "basicAuth", "authorization",
                  "bearerTokenSecret", "oauth2", "trackTimestampsStaleness"}
    for i, ep in enumerate(eps):
        for k in ep:
            if k not in allowed_ep:
                fail(f"{where}: unknown field podMetricsEndpoints[{i}].{k}")
        if not isinstance(ep.get("port"), str):
            fail(f"{where}: podMetricsEndpoints[{i}].port must name a container port")
        if ep.get("path", "/metrics") != "/metrics":
            fail(f"{where}: podMetricsEndpoints[{i}].path must be /metrics")
        for k in ("interval", "scrapeTimeout"):
            if k in ep and not re.fullmatch(r"(\d+(ms|s|m|h))+", str(ep[k])):
                fail(f"{where}: podMetricsEndpoints[{i}].{k} {ep[k]!r} is not a Prometheus duration")


def check_kustomizations() -> None:
    for kf in sorted(K8S.rglob("kustomization.yaml")):
        doc = load_docs(kf)[0]
        for r in doc.get("resources", []):
            target = (kf.parent / r).resolve()
            if target.is_dir():
                if not (target / "kustomization.yaml").is_file():
                    fail(f"{rel(kf)}: resource {r} is a directory without kustomization.yaml")
            elif not target.is_file():
                fail(f"{rel(kf)}: resource {r} does not exist")
            elif not target.is_relative_to(kf.parent):
                fail(f"{rel(kf)}: file {r} is outside the kustomization root (kustomize refuses it)")


def dockerfile_config_path() -> str | None:
    m = re.search(r'^CMD\s+(\[.*\])\s*$', DOCKERFILE.read_text(), re.M)
    if not m:
        return None
    cmd = json.loads(m.group(1))
    return cmd[cmd.index("--config") + 1] if "--config" in cmd else None


def check_dockerfile() -> None:
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    if not froms or not froms[0].startswith("rust:1-bookworm"):
        fail("Dockerfile: the build stage should be FROM rust:1-bookworm")
    if not froms or not (froms[-1].startswith("gcr.io/distroless/cc-debian12") or froms[-1].startswith("debian:bookworm-slim")):
        fail("Dockerfile: the final stage should be distroless/cc-debian12 or debian:bookworm-slim")
    for pat, what in [
        (r"^EXPOSE\s+8080\s+9090\s*$", "EXPOSE 8080 9090"),
        (r'^ENTRYPOINT\s+\["wspulse"\]\s*$', 'ENTRYPOINT ["wspulse"]'),
        (r'^CMD\s+\["run",\s*"--config",\s*"/etc/wspulse/wspulse.toml"\]\s*$', 'CMD ["run", "--config", "/etc/wspulse/wspulse.toml"]'),
        (r"WSPULSE_LISTEN__ADDR=0\.0\.0\.0:8080", "ENV WSPULSE_LISTEN__ADDR=0.0.0.0:8080"),
        (r"WSPULSE_ADMIN__ADDR=0\.0\.0\.0:9090", "ENV WSPULSE_ADMIN__ADDR=0.0.0.0:9090"),
        (r"^USER\s+(?!0\b|root\b)\S+", "a non-root USER"),
    ]:
        if not re.search(pat, text, re.M):
            fail(f"Dockerfile: missing {what}")
    ignored = {l.strip().rstrip("/") for l in DOCKERIGNORE.read_text().splitlines()
               if l.strip() and not l.startswith("#")}
    for src in re.findall(r"^COPY\s+(?!--from)(.+?)\s+\S+\s*$", text, re.M):
        for s in src.split():
            parts = Path(s).parts
            for i in range(1, len(parts) + 1):
                if str(Path(*parts[:i])) in ignored:
                    fail(f".dockerignore excludes {s}, which the Dockerfile copies")
            if not (ROOT / s).exists():
                fail(f"Dockerfile copies {s}, which does not exist")
    for must in (".git", "**/target"):
        if must not in ignored and must.lstrip("*/") not in ignored:
            fail(f".dockerignore should exclude {must}")


def cmd_k8s_consistency() -> int:
    known = interface_config_keys()
    common: dict[str, dict] = {}
    for path in manifest_files():
        for d in load_docs(path):
            kind = d.get("kind")
            if kind == "PodMonitor":
                check_podmonitor(d, rel(path))
                common["podmonitor"] = d
            elif kind in ("ConfigMap", "Service", "NetworkPolicy"):
                common[kind.lower()] = d
    for need in ("configmap", "service", "podmonitor"):
        if need not in common:
            fail(f"deploy/kubernetes: no {need} found")
    if errors:
        return finish("")

    try:
        cm_toml = tomllib.loads(common["configmap"]["data"]["wspulse.toml"])
    except (KeyError, tomllib.TOMLDecodeError) as e:
        fail(f"ConfigMap data wspulse.toml: {e}")
        return finish("")
    check_toml_keys(cm_toml, "ConfigMap wspulse.toml", known)
    try:
        check_toml_keys(tomllib.loads(DOCKER_TOML.read_text()), rel(DOCKER_TOML), known)
    except tomllib.TOMLDecodeError as e:
        fail(f"{rel(DOCKER_TOML)}: {e}")

    check_deployment(K8S / "deployment.yaml", True, cm_toml, common)
    check_deployment(K8S / "classic" / "deployment.yaml", False, cm_toml, common)
    check_kustomizations()
    check_dockerfile()
    return finish("PodMonitor structure, manifests, ConfigMap TOML, Dockerfile and .dockerignore agree")


# --------------------------------------------------------------------------
# rules-meta


def rule_files() -> list[Path]:
    """Every rule file of the kit: deploy/prometheus/*.rules.yml (not the tests)."""
    return sorted(PROMETHEUS.glob("*.rules.yml"))


def test_file(rules: Path) -> Path:
    """x.rules.yml is tested by x.rules.test.yml."""
    return rules.with_name(rules.name.removesuffix(".rules.yml") + ".rules.test.yml")


def load_rules(path: Path | None = None) -> list[dict]:
    """The rules of one file, or of every rule file of the kit."""
    paths = [path] if path else rule_files()
    return [r for p in paths for g in yaml.safe_load(p.read_text())["groups"] for r in g["rules"]]


def cmd_rules_meta() -> int:
    total = 0
    for path in rule_files():
        total += check_rules_meta(path, test_file(path))
    return finish(f"{total} alerts in {len(rule_files())} rule files: annotations complete, "
                  "each tested firing and silent")


def check_rules_meta(rules_path: Path, test_path: Path) -> int:
    alerts = [r for r in load_rules(rules_path) if "alert" in r]
    if not test_path.is_file():
        fail(f"{rel(rules_path)}: no test file {rel(test_path)}")
        return len(alerts)
    tests = yaml.safe_load(test_path.read_text())
    fires: set[str] = set()
    silent: set[str] = set()
    for t in tests.get("tests", []):
        for a in t.get("alert_rule_test", []) or []:
            (fires if a.get("exp_alerts") else silent).add(a["alertname"])
    for a in alerts:
        name = a["alert"]
        ann = a.get("annotations", {})
        for k in ("summary", "description", "runbook_url"):
            if not ann.get(k):
                fail(f"{name}: annotation {k} missing")
        if not str(ann.get("runbook_url", "")).startswith(RUNBOOK_BASE):
            fail(f"{name}: runbook_url must start with {RUNBOOK_BASE}")
        if "severity" not in a.get("labels", {}):
            fail(f"{name}: no severity label")
        if name not in fires:
            fail(f"{name}: no test case in {rel(test_path)} where it fires")
        if name not in silent:
            fail(f"{name}: no test case in {rel(test_path)} where it stays silent")
    return len(alerts)


# --------------------------------------------------------------------------
# dashboard

DS_VAR = re.compile(r"^\$\{?datasource\}?$")


def all_panels(panels: list) -> list[dict]:
    out = []
    for p in panels:
        out.append(p)
        out += all_panels(p.get("panels", []))
    return out


def walk(obj, path="$"):
    if isinstance(obj, dict):
        yield path, obj
        for k, v in obj.items():
            yield from walk(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from walk(v, f"{path}[{i}]")


def substitute_grafana_vars(expr: str) -> str:
    """Make a dashboard query plain PromQL: intervals get a duration, variables match all."""
    intervals = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}

    def repl(m):
        name = m.group(1) or m.group(2)
        return intervals.get(name, ".*")

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", repl, expr)


def dashboard_exprs(dash: dict) -> list[tuple[str, str]]:
    out = []
    for p in all_panels(dash.get("panels", [])):
        for t in p.get("targets", []) or []:
            if t.get("expr"):
                out.append((f"panel {p.get('id')} ({p.get('title')}) {t.get('refId')}", t["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", q or "")
            if m:
                out.append((f"variable {v['name']}", m.group(1)))
            elif q:
                out.append((f"variable {v['name']}", q))
    return out


def cmd_dashboard(out_rules: str) -> int:
    try:
        dash = json.loads(DASHBOARD.read_text())
    except json.JSONDecodeError as e:
        fail(f"{rel(DASHBOARD)}: not JSON: {e}")
        return finish("")
    for k in ("title", "uid", "panels", "templating", "schemaVersion"):
        if k not in dash:
            fail(f"dashboard: top-level {k} missing")
    variables = dash.get("templating", {}).get("list", [])
    ds_vars = [v for v in variables if v.get("type") == "datasource" and v.get("name") == "datasource"]
    if not ds_vars or ds_vars[0].get("query") != "prometheus":
        fail("dashboard: no datasource variable named 'datasource' of type datasource, query prometheus")

    panels = all_panels(dash.get("panels", []))
    ids = [p.get("id") for p in panels]
    dup = sorted({i for i in ids if ids.count(i) > 1}, key=str)
    if dup:
        fail(f"dashboard: duplicate panel ids {dup}")
    if any(not isinstance(i, int) for i in ids):
        fail("dashboard: every panel needs an integer id")

    # No datasource anywhere may name a UID: only the ${datasource} variable
    # (the built-in Grafana annotation source is the one exception).
    for path, obj in walk(dash):
        if "datasource" not in obj:
            continue
        ds = obj["datasource"]
        if ds is None:
            continue
        if isinstance(ds, str):
            if not DS_VAR.match(ds):
                fail(f"dashboard {path}: datasource {ds!r} is hard-coded")
            continue
        uid = ds.get("uid")
        if ds.get("type") == "grafana" and uid == "-- Grafana --":
            continue
        if uid is None or not DS_VAR.match(str(uid)):
            fail(f"dashboard {path}: datasource uid {uid!r} is not ${{datasource}}")
        elif ds.get("type") != "prometheus":
            fail(f"dashboard {path}: datasource type {ds.get('type')!r} is not prometheus")

    boxes = []
    for p in panels:
        if p.get("type") == "row":
            gp = p.get("gridPos", {})
            boxes.append((p.get("id"), gp))
            continue
        if not p.get("datasource"):
            fail(f"dashboard panel {p.get('id')}: no datasource")
        targets = p.get("targets") or []
        if not targets:
            fail(f"dashboard panel {p.get('id')} ({p.get('title')}): no queries")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs):
            fail(f"dashboard panel {p.get('id')}: duplicate refIds {refs}")
        boxes.append((p.get("id"), p.get("gridPos", {})))
    for pid, gp in boxes:
        if not all(isinstance(gp.get(k), int) for k in ("h", "w", "x", "y")) or gp["x"] + gp["w"] > 24:
            fail(f"dashboard panel {pid}: bad gridPos {gp}")
    cells: dict[tuple[int, int], object] = {}
    for pid, gp in boxes:
        try:
            for x in range(gp["x"], gp["x"] + gp["w"]):
                for y in range(gp["y"], gp["y"] + gp["h"]):
                    if (x, y) in cells:
                        fail(f"dashboard: panels {cells[(x, y)]} and {pid} overlap")
                        raise StopIteration
                    cells[(x, y)] = pid
        except (StopIteration, KeyError):
            pass

    # The dashboard's PromQL, as recording rules, for `promtool check rules`.
    exprs = dashboard_exprs(dash)
    rules = [{"record": f"dashboard_query:{i}", "expr": substitute_grafana_vars(e)}
             for i, (_, e) in enumerate(exprs)]
    Path(out_rules).write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False))
    index = "\n".join(f"# dashboard_query:{i} = {w}" for i, (w, _) in enumerate(exprs))
    Path(out_rules + ".index").write_text(index + "\n")

    fams, _ = interface_metrics()
    used = referenced_metric_names([e for _, e in exprs], set())
    bases = {strip_suffix(n) for n in used}
    absent = sorted(f for f in fams if f not in bases)
    if absent:
        note(f"metrics INTERFACE.md names that no panel shows: {', '.join(absent)}")
    return finish(f"{len(panels)} panels with unique ids, datasource only through ${{datasource}}, "
                  f"{len(exprs)} queries written to {out_rules}")


# --------------------------------------------------------------------------
# anchors


def github_slug(heading: str) -> str:
    s = heading.strip().lower()
    s = re.sub(r"<[^>]+>", "", s)
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def cmd_anchors() -> int:
    if not OPERATIONS.is_file():
        fail(f"{rel(OPERATIONS)} does not exist")
        return finish("")
    slugs: dict[str, int] = {}
    anchors = set()
    in_code = False
    for line in OPERATIONS.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = github_slug(m.group(1))
            n = slugs.get(base, 0)
            anchors.add(base if n == 0 else f"{base}-{n}")
            slugs[base] = n + 1
        anchors.update(re.findall(r'<a\s+(?:id|name)="([^"]+)"', line))
    refs: list[tuple[str, str]] = []
    for r in load_rules():
        url = (r.get("annotations") or {}).get("runbook_url")
        if url:
            refs.append((f"alert {r['alert']} runbook_url", url.split("#", 1)[1] if "#" in url else ""))
    files = [p for p in (ROOT / "deploy").rglob("*") if p.is_file()] + [DOCKERFILE]
    for p in files:
        for a in re.findall(r"operations\.md#([\w-]+)", p.read_text(errors="replace")):
            refs.append((rel(p), a))
    # Links inside operations.md to its own sections.
    for a in re.findall(r"\]\(#([\w-]+)\)", OPERATIONS.read_text()):
        refs.append((rel(OPERATIONS), a))
    for where, a in refs:
        if a not in anchors:
            fail(f"{where}: anchor #{a} is not a heading of {rel(OPERATIONS)}")
    return finish(f"{len(refs)} links into {rel(OPERATIONS)} resolve")


# --------------------------------------------------------------------------
# metrics

HIST_SUFFIXES = ("_bucket", "_sum", "_count")


def strip_suffix(name: str) -> str:
    for s in HIST_SUFFIXES:
        if name.endswith(s):
            return name[: -len(s)]
    return name


def referenced_metric_names(exprs: list[str], recorded: set[str]) -> set[str]:
    names = set()
    for e in exprs:
        e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', e)  # drop string literals
        e = re.sub(r"\{[^{}]*\}", "{}", e)  # and label matchers
        for tok in re.findall(r"(?<![\w:])[a-zA-Z_:][\w:]*", e):
            if tok.startswith("wspulse_") and ":" not in tok and tok not in recorded:
                names.add(tok)
    return names


# Labels Prometheus attaches when it scrapes (PodMonitor / pod discovery).
TARGET_LABELS = {"namespace", "job", "instance", "pod", "container", "service", "endpoint"}


def matching_paren(e: str, i: int) -> int:
    depth = 0
    for j in range(i, len(e)):
        depth += {"(": 1, ")": -1}.get(e[j], 0)
        if depth == 0:
            return j
    return len(e)


def referenced_labels(exprs: list[str]) -> set[tuple[str, str]]:
    """(metric, label) pairs: label matchers on wspulse_* selectors, and `by (...)`
    labels of aggregations whose argument reads one wspulse_* metric directly."""
    pairs = set()
    for e in exprs:
        for name, inner in re.findall(r"(?<![\w:])(wspulse_\w+)\{([^}]*)\}", e):
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", re.sub(r'"(?:[^"\\]|\\.)*"', '""', inner)):
                pairs.add((name, label))
        for m in re.finditer(r"\bby\s*\(([^)]*)\)\s*\(", e):
            start = m.end() - 1
            arg = e[start:matching_paren(e, start) + 1]
            names = set(re.findall(r"(?<![\w:])wspulse_\w+", arg))
            if len(names) == 1 and not re.search(r"\w:\w", arg):
                name = names.pop()
                for label in re.findall(r"\w+", m.group(1)):
                    pairs.add((name, label))
    return pairs


def check_labels(pairs: set[tuple[str, str]], labels: dict[str, set[str]], source: str) -> None:
    bad = []
    for name, label in sorted(pairs):
        base = strip_suffix(name)
        if label in TARGET_LABELS or (label == "le" and name.endswith("_bucket")):
            continue
        if base not in labels:
            continue  # family missing altogether: reported by the name check
        if label not in labels[base]:
            bad.append(f"{name}{{{label}}}")
    if bad:
        fail(f"labels not on the metric in {source}: {', '.join(bad)}")


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def http_get(url: str, timeout: float = 1.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def tls_section(tmp: Path) -> str:
    """A [listen.tls] section with a self-signed pair made by openssl: the TLS
    families (certificate expiry, reloads) exist only on a TLS listener."""
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(tmp / "tls.key"),
                        "-out", str(tmp / "tls.crt"), "-days", "2", "-subj", "/CN=localhost"],
                       capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        note("openssl could not make a certificate: the TLS families are checked against INTERFACE.md only")
        return ""
    return f'\n[listen.tls]\ncert_file = "{tmp / "tls.crt"}"\nkey_file = "{tmp / "tls.key"}"\n'


def binary_families(binary: str) -> tuple[dict[str, str], dict[str, set[str]]] | None:
    """Start `wspulse run` on free loopback ports, scrape /metrics, stop it."""
    listen, admin, upstream = free_ports(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSPULSE_")}
    with tempfile.TemporaryDirectory(prefix="wspulse-deploy-check-") as tmp:
        cfg = Path(tmp) / "wspulse.toml"
        cfg.write_text(
            f'[listen]\naddr = "127.0.0.1:{listen}"\n\n'
            f'[upstream]\nurl = "ws://127.0.0.1:{upstream}"\n\n'
            f'[admin]\naddr = "127.0.0.1:{admin}"\n\n'
            '[log]\nlevel = "warn"\n'
            + tls_section(Path(tmp))
        )
        log = (Path(tmp) / "wspulse.log").open("w+")
        proc = subprocess.Popen([binary, "run", "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)
        print(f"    started {binary} (pid {proc.pid}), listen 127.0.0.1:{listen}, admin 127.0.0.1:{admin}")
        text = None
        try:
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                try:
                    status, body = http_get(f"http://127.0.0.1:{admin}/metrics", timeout=0.5)
                    if status == 200:
                        text = body
                        break
                except OSError:
                    pass
                time.sleep(0.05)
            if text is None:
                log.seek(0)
                tail = log.read()[-2000:]
                why = f"exited with {proc.returncode}" if proc.poll() is not None else "no answer within 5s"
                fail(f"{binary}: /metrics on 127.0.0.1:{admin} {why}; its output:\n{tail}")
                return None
            for path, want in (("/healthz", 200), ("/readyz", 200)):
                status, _ = http_get(f"http://127.0.0.1:{admin}{path}")
                if status != want:
                    fail(f"{binary}: GET {path} answered {status}, expected {want}")
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                    if proc.returncode != 0:
                        note(f"{binary} exited with {proc.returncode} on SIGTERM (INTERFACE.md says 0)")
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    note(f"{binary} did not exit within 15s of SIGTERM; killed (pid {proc.pid})")
            log.close()
    fams: dict[str, str] = {}
    labels: dict[str, set[str]] = {}
    for line in text.splitlines():
        m = re.match(r"#\s*(HELP|TYPE)\s+([a-zA-Z_:][\w:]*)(?:\s+(\S+))?", line)
        if m:
            fams.setdefault(m.group(2), "unknown")
            if m.group(1) == "TYPE" and m.group(3):
                fams[m.group(2)] = m.group(3)
            continue
        m = re.match(r"([a-zA-Z_:][\w:]*)\{([^}]*)\}", line)
        if m:
            base = m.group(1) if m.group(1) in fams else strip_suffix(m.group(1))
            labels.setdefault(base, set()).update(re.findall(r'(\w+)="', m.group(2)))
    return fams, labels


def binary_check_configs(binary: str) -> None:
    """`wspulse check` accepts the ConfigMap's TOML and the image's default file."""
    cm = next(d for p in manifest_files() for d in load_docs(p) if d.get("kind") == "ConfigMap")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSPULSE_")}
    with tempfile.TemporaryDirectory(prefix="wspulse-deploy-check-") as tmp:
        cfg = Path(tmp) / "wspulse.toml"
        cfg.write_text(cm["data"]["wspulse.toml"])
        for what, path in (("ConfigMap wspulse.toml", cfg), (rel(DOCKER_TOML), DOCKER_TOML)):
            r = subprocess.run([binary, "check", "--config", str(path)], capture_output=True, text=True,
                               timeout=30, env=env, stdin=subprocess.DEVNULL)
            if r.returncode != 0:
                fail(f"`wspulse check` refuses {what} (exit {r.returncode}):\n{r.stdout}{r.stderr}")
            else:
                print(f"    wspulse check accepts {what}")


def cmd_metrics() -> int:
    rules = load_rules()
    recorded = {r["record"] for r in rules if "record" in r}
    rule_names = referenced_metric_names([r["expr"] for r in rules], recorded)
    dash = json.loads(DASHBOARD.read_text())
    dash_names = referenced_metric_names([e for _, e in dashboard_exprs(dash)], recorded)

    binary = os.environ.get("WSPULSE_BIN")
    if binary:
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            fail(f"WSPULSE_BIN={binary} is not an executable file")
            return finish("")
        got = binary_families(binary)
        if got is None:
            return finish("")
        fams, labels = got
        source = f"the families {binary} exposes on /metrics (# HELP / # TYPE lines)"
        binary_check_configs(binary)
    else:
        fams, where = interface_metrics()
        labels = interface_labels()
        source = f"the metric names in {where}"
        print("    WSPULSE_BIN is not set: comparing against INTERFACE.md, not a running binary")

    missing = []
    for origin, names in (("rules", rule_names), ("dashboard", dash_names)):
        for n in sorted(names):
            if n in fams:
                continue
            base = strip_suffix(n)
            if base != n and fams.get(base) in ("histogram", "summary", "unknown"):
                continue
            missing.append(f"{n} ({origin})")
    if missing:
        fail(f"not among {source}: {', '.join(missing)}")
    all_exprs = [r["expr"] for r in rules] + [e for _, e in dashboard_exprs(dash)]
    if labels:
        check_labels(referenced_labels(all_exprs), labels, "its samples" if binary else "INTERFACE.md")
    else:
        note("no label list (INTERFACE.md not found): label names not checked")
    ours = {strip_suffix(n) for n in rule_names | dash_names}
    print(f"    checked {len(ours)} families used by the rules and the dashboard against {source}")
    unused = sorted(f for f in fams if f.startswith("wspulse_") and f not in ours)
    if unused:
        note(f"exposed but used by neither rules nor dashboard: {', '.join(unused)}")
    return finish("every wspulse_* metric the rules and the dashboard use is exposed, with the labels they use")


# --------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    cmds = {
        "k8s-classify": (cmd_k8s_classify, 0),
        "k8s-filter": (cmd_k8s_filter, 2),
        "k8s-consistency": (cmd_k8s_consistency, 0),
        "rules-meta": (cmd_rules_meta, 0),
        "dashboard": (cmd_dashboard, 1),
        "anchors": (cmd_anchors, 0),
        "metrics": (cmd_metrics, 0),
    }
    if len(argv) < 2 or argv[1] not in cmds or len(argv) - 2 != cmds[argv[1]][1]:
        print(__doc__, file=sys.stderr)
        return 2
    fn, _ = cmds[argv[1]]
    return fn(*argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
