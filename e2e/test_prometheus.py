"""The deploy kit against a real Prometheus (Debian's `prometheus`).

Three wspulse instances, scraped every second with every rule file of
deploy/prometheus/ loaded: two in front of a clean echo upstream, one in
front of an upstream that drops every session. Checked through
Prometheus' HTTP API: every target up, every rule evaluates without error,
the alerts this scenario should raise are raised and no other, every PromQL
expression of the Grafana dashboard is accepted and returns series where its
metrics exist, `wspulse explain --prometheus` names the faulty instance and
its cause, and a SIGTERM drain's counts reach Prometheus before the process
exits (`shutdown.final_scrape`).

One scenario, one module-scoped setup; each check is its own test. About
30 s.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import harness

sys.path.insert(0, str(harness.REPO / ".ci"))
import deploy_check  # noqa: E402  (the dashboard's queries, as CI reads them)

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
RULE_FILES = sorted((harness.REPO / "deploy" / "prometheus").glob("*.rules.yml"))
DASHBOARD = harness.REPO / "deploy" / "grafana" / "wspulse.json"
SESSIONS = 40  # per instance: enough for every rate-based alert's floor
FAULTY, CLEAN, DRAINED = "ws-faulty", "ws-clean", "ws-drained"

# What this scenario must raise: a third of the job's sessions end with
# 1006 (the faulty upstream drops them). The SLO burn alerts have no `for`
# and fire; WspulseAbnormalClosureRatioHigh has `for: 10m`, longer than this
# test, so its expression being true shows as `pending` (its `for` is
# covered by promtool's unit tests).
EXPECTED_FIRING = {"WspulseSessionBudgetBurnFast", "WspulseSessionBudgetBurnSlow"}
# Pending, not firing: their `for: 10m` outlasts the test (promtool covers
# `for`). The faulty instance's clients open their next session the moment
# the last one is dropped, so they reconnect without backoff, as the alert says.
EXPECTED_PENDING = {"WspulseAbnormalClosureRatioHigh", "WspulseClientsReconnectWithoutBackoff"}


def api(base: str, path: str, **params) -> dict:
    url = f"{base}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    status, body = harness.http_get(url)
    data = json.loads(body)
    assert status == 200 and data.get("status") == "success", f"{url}: {status} {body[:500]}"
    return data["data"]


def query(base: str, expr: str) -> list[dict]:
    return api(base, "/api/v1/query", query=expr)["result"]


def poll(what: str, check, timeout: float = 60.0):
    """`check()` until it returns something truthy, within `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout}s (last: {last})")


def session(url: str, hold: threading.Event | None = None, dropped: bool = False) -> int | None:
    """One session: a message and its echo, then a clean close; `dropped`:
    wait for the proxy's Close instead (the upstream drops the session after
    its echo). With `hold`, stay open (answering the proxy's pings) until it
    is set or the proxy closes. The close code the client got."""
    try:
        with connect(url, open_timeout=5, close_timeout=5) as ws:
            ws.send("hello")
            ws.recv(timeout=5)
            if dropped:
                ws.recv(timeout=5)
                return None  # a message after the echo: not what the scenario wants
            if hold is not None:
                while not hold.is_set():
                    try:
                        ws.recv(timeout=0.2)
                    except TimeoutError:
                        continue
            ws.close(1000)
    except ConnectionClosed as e:
        return e.rcvd.code if e.rcvd else 1006
    return 1000


class Scenario:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: dict[str, harness.Wspulse] = {}
        self.holders: list[threading.Thread] = []
        self.release = threading.Event()

    def start(self) -> None:
        _, clean_port = harness.start_upstream("py", mode="echo")
        _, drop_port = harness.start_upstream("py", mode="drop")
        fast = {"WSPULSE_KEEPALIVE__INTERVAL": "1s", "WSPULSE_KEEPALIVE__TIMEOUT": "1s"}
        self.procs[CLEAN] = harness.Wspulse(f"ws://127.0.0.1:{clean_port}", extra_env=fast)
        self.procs[FAULTY] = harness.Wspulse(f"ws://127.0.0.1:{drop_port}", extra_env=fast)
        # Waits for one scrape after its drain: at most 30 s, normally 1 s.
        self.procs[DRAINED] = harness.Wspulse(
            f"ws://127.0.0.1:{clean_port}",
            extra_env={**fast, "WSPULSE_SHUTDOWN__FINAL_SCRAPE": "30s"})
        self.prom_port = harness.free_port()
        self.base = f"http://127.0.0.1:{self.prom_port}"
        targets = "\n".join(
            f"      - targets: ['127.0.0.1:{w.admin_port}']\n        labels: {{pod: {name}}}"
            for name, w in self.procs.items())
        rule_files = "\n".join(f"  - {p}" for p in RULE_FILES)
        config = self.tmp / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n{rule_files}\n"
            f"scrape_configs:\n  - job_name: ws\n    static_configs:\n{targets}\n")
        self.prometheus = harness.Proc(
            "prometheus",
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={self.tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.prom_port}", "--log.level=warn"],
            stdout_to_log=True)
        poll("prometheus ready", lambda: self._ready(), timeout=30)

    def _ready(self) -> bool:
        if self.prometheus.p.poll() is not None:
            raise AssertionError(f"prometheus exited: {self.prometheus.log_text()[-3000:]}")
        try:
            return harness.http_get(f"{self.base}/-/ready", timeout=1)[0] == 200
        except OSError:
            return False

    def traffic(self) -> None:
        # A held session per instance: keepalive pings give RTT data, and
        # the drained instance has a session to drain.
        for name, w in self.procs.items():
            t = threading.Thread(target=session, args=(w.url + "/held", self.release), daemon=True)
            t.start()
            self.holders.append(t)
        codes: dict[str, list] = {name: [] for name in self.procs}

        def run(name: str) -> None:
            for _ in range(SESSIONS):
                codes[name].append(session(self.procs[name].url + "/echo", dropped=name == FAULTY))

        threads = [threading.Thread(target=run, args=(n,)) for n in (CLEAN, FAULTY)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert codes[CLEAN] == [1000] * SESSIONS, codes[CLEAN]
        assert codes[FAULTY] == [1014] * SESSIONS, codes[FAULTY]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    harness.need(Path(PROMETHEUS).exists(), "Debian's prometheus is not installed (apt-get install prometheus)")
    s = Scenario(tmp_path_factory.mktemp("prometheus"))
    try:
        s.start()
        poll("every target up", lambda: all_up(s), timeout=30)
        s.traffic()
        # Prometheus has scraped the sessions' ends.
        poll("the faulty instance's closures in Prometheus", lambda: query(
            s.base, f'sum(wspulse_connections_closed_total{{pod="{FAULTY}",code="1006"}}) >= {SESSIONS}'),
            timeout=30)
    except BaseException:
        s.release.set()
        harness.Proc.kill_all()
        raise
    # The processes live for the whole module: out of the registry that the
    # autouse fixture empties after every test, ended here by PID instead.
    owned = list(harness.Proc.registry)
    harness.Proc.registry.clear()
    try:
        yield s
    finally:
        s.release.set()
        for p in reversed(owned):
            p.kill()


def all_up(s: Scenario) -> bool:
    targets = api(s.base, "/api/v1/targets")["activeTargets"]
    return len(targets) == len(s.procs) and all(t["health"] == "up" for t in targets)


def test_every_target_is_up(scenario):
    assert all_up(scenario)


def test_every_rule_evaluates_without_error(scenario):
    def evaluated():
        rules = [r for g in api(scenario.base, "/api/v1/rules")["groups"] for r in g["rules"]]
        bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] == "err"]
        assert not bad, f"rules failing in Prometheus: {bad}"
        return rules if all(r["health"] == "ok" for r in rules) else None

    rules = poll("every rule evaluated", evaluated, timeout=30)
    loaded = {g["file"] for g in api(scenario.base, "/api/v1/rules")["groups"]}
    assert loaded == {str(p) for p in RULE_FILES}, loaded
    assert len(rules) > 20


def test_the_expected_alerts_fire_and_no_other(scenario):
    def states():
        got: dict[str, set[str]] = {}
        for a in api(scenario.base, "/api/v1/alerts")["alerts"]:
            got.setdefault(a["state"], set()).add(a["labels"]["alertname"])
        return got

    def expected_active():
        got = states()
        active = got.get("firing", set()) | got.get("pending", set())
        return got if EXPECTED_FIRING <= got.get("firing", set()) and EXPECTED_PENDING <= active else None

    got = poll("the expected alerts", expected_active, timeout=60)
    active = got.get("firing", set()) | got.get("pending", set())
    assert active == EXPECTED_FIRING | EXPECTED_PENDING, got
    # The faulty upstream's job is named, with the SLO it burns.
    burning = [a for a in api(scenario.base, "/api/v1/alerts")["alerts"]
               if a["labels"]["alertname"] == "WspulseSessionBudgetBurnFast"]
    assert burning and burning[0]["labels"]["job"] == "ws" and burning[0]["labels"]["slo"] == "session"


def test_every_dashboard_query_runs_and_has_data(scenario):
    dash = json.loads(DASHBOARD.read_text())
    exprs = deploy_check.dashboard_exprs(dash)
    assert len(exprs) > 20
    empty = []
    for where, expr in exprs:
        promql = deploy_check.substitute_grafana_vars(expr)
        result = query(scenario.base, promql)  # raises unless Prometheus accepts it
        if result:
            continue
        names = deploy_check.referenced_metric_names([promql], set())
        has_data = [n for n in names if query(scenario.base, f'count({{__name__="{n}"}})')]
        if has_data:
            empty.append(f"{where}: {promql} (series exist for {has_data})")
    assert not empty, "dashboard queries with no result although their metrics exist:\n" + "\n".join(empty)


def test_explain_names_the_faulty_instance_and_the_cause(scenario):
    out = subprocess.run(
        [str(harness.wspulse_bin()), "explain", "--prometheus", scenario.base,
         "--selector", 'job="ws"', "--window", "5m", "--output", "json"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["verdict"]["scope"] == "few-instances", report["verdict"]
    assert report["verdict"]["troubled"] == [FAULTY], report["verdict"]
    faulty = next(i for i in report["instances"] if i.get("pod") == FAULTY)
    assert faulty["top_cause"] == "1006 upstream/eof", faulty
    assert report["outliers"]["abnormal_ratio"][0]["name"] == FAULTY
    assert any("upstream dropped TCP" in f for f in report["diagnosis"]["findings"]), report["diagnosis"]
    # The text says the same to a person.
    text = subprocess.run(
        [str(harness.wspulse_bin()), "explain", "--prometheus", scenario.base,
         "--selector", '{job="ws"}', "--window", "5m"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL).stdout
    assert f"on a few instances: 1 of 3: {FAULTY}" in text, text


def test_a_drains_counts_reach_prometheus_before_exit(scenario):
    w = scenario.procs[DRAINED]
    started = time.monotonic()
    w.sigterm()
    assert w.proc.wait(timeout=40) == 0
    took = time.monotonic() - started
    # It waited for a scrape (1 s apart), not for final_scrape's 30 s.
    assert took < 15, f"exit took {took:.1f}s"
    w.proc.join_output()
    records = w.log_records()
    assert any("waiting for one /metrics scrape" in r.get("message", "") for r in records), records[-5:]
    sel = f'pod="{DRAINED}"'
    drained = query(scenario.base, f'max_over_time(wspulse_drain_sessions_total{{{sel},outcome="closed"}}[5m])')
    assert drained and float(drained[0]["value"][1]) == 1.0, drained
    closed = query(scenario.base, 'max_over_time(wspulse_connections_closed_total'
                                  f'{{{sel},code="1001",side="proxy",cause="shutdown"}}[5m])')
    assert closed and float(closed[0]["value"][1]) == 1.0, closed
