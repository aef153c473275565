"""Shared plumbing for wspulse's end-to-end tests.

Everything here runs real processes on 127.0.0.1 (or inside network
namespaces the tests create), on ports the OS picks, with a bound on every
wait, and ends every process it starts by its own PID.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

E2E = Path(__file__).resolve().parent
REPO = E2E.parent
PEERS = E2E / "peers"
NODE_MODULES = E2E / "node_modules"

# Every single wait in the suite is bounded by this unless a test says otherwise.
LIMIT = 15.0


def no_skip() -> bool:
    """In CI (tests/e2e.rs sets this when CI=true) a missing tool is a failure, not a skip."""
    return os.environ.get("E2E_NO_SKIP") == "1"


def need(ok: bool, reason: str) -> None:
    """Skip the calling test with `reason` unless `ok`; fail instead in CI."""
    import pytest

    if ok:
        return
    if no_skip():
        pytest.fail(f"required e2e tool missing (E2E_NO_SKIP=1): {reason}")
    pytest.skip(reason)


def wspulse_bin() -> Path:
    """The binary under test: $E2E_WSPULSE_BIN, else target/release, else target/debug."""
    env = os.environ.get("E2E_WSPULSE_BIN")
    if env:
        return Path(env)
    for p in (REPO / "target/release/wspulse", REPO / "target/debug/wspulse"):
        if p.exists():
            return p
    raise RuntimeError("no wspulse binary: run `cargo build --release` or set E2E_WSPULSE_BIN")


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS considers free right now (bind :0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def node_ok() -> tuple[bool, str]:
    if shutil.which("node") is None:
        return False, "node is not installed"
    if not (NODE_MODULES / "ws").is_dir():
        return False, "e2e/node_modules/ws missing: run `npm ci --prefix e2e`"
    return True, ""


class Proc:
    """A child process whose stdout lines are collected by a reader thread.

    Lines that parse as JSON objects are also queued for `expect`.
    stderr goes to a log file (returned by `log_text`).
    """

    registry: list["Proc"] = []

    def __init__(self, name: str, argv: list[str], env: dict | None = None,
                 log_dir: Path | None = None, cwd: Path | None = None,
                 stdout_to_log: bool = False, strip_wspulse_env: bool = False,
                 term_first: bool = False):
        self.name = name
        self.argv = argv
        # SIGTERM (then SIGKILL after 5 s) for a process that must end its own
        # children, e.g. the Playwright driver and its Chromium.
        self.term_first = term_first
        log_dir = log_dir or Path(os.environ.get("E2E_LOGS", "/tmp"))
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}-{os.getpid()}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        full_env = dict(os.environ)
        if strip_wspulse_env:
            # wspulse reads every WSPULSE_* variable as configuration and
            # refuses unknown ones: pass only the ones this harness sets.
            full_env = {k: v for k, v in full_env.items() if not k.startswith("WSPULSE_")}
        if env:
            full_env.update(env)
        self.p = subprocess.Popen(
            argv, stdin=subprocess.PIPE,
            stdout=self._log if stdout_to_log else subprocess.PIPE, stderr=self._log,
            env=full_env, cwd=str(cwd) if cwd else None,
        )
        self.pid = self.p.pid
        self.lines: list[str] = []
        self.events: "queue.Queue[dict]" = queue.Queue()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()
        Proc.registry.append(self)

    def _read(self) -> None:
        if self.p.stdout is None:
            return
        for raw in self.p.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            if line.startswith("{"):
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    self.events.put(obj)

    def expect(self, pred=None, timeout: float = LIMIT, what: str = "event") -> dict:
        """The next JSON line (matching `pred`), within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"{self.name}: no {what} within {timeout}s; exit={self.p.poll()}; "
                    f"stdout={self.lines[-20:]}; log tail={self.log_text()[-2000:]}")
            try:
                ev = self.events.get(timeout=min(left, 0.2))
            except queue.Empty:
                if self.p.poll() is not None and self.events.empty():
                    self._t.join(timeout=1)
                    if self.events.empty():
                        raise AssertionError(
                            f"{self.name}: exited ({self.p.returncode}) before {what}; "
                            f"stdout={self.lines[-20:]}; log tail={self.log_text()[-2000:]}")
                continue
            if pred is None or pred(ev):
                return ev

    def send_line(self, line: str) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write((line + "\n").encode())
        self.p.stdin.flush()

    def wait(self, timeout: float = LIMIT) -> int:
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} (pid {self.pid}) did not exit within {timeout}s")

    def join_output(self, timeout: float = 5.0) -> None:
        """After the process exited: wait until every line it printed has been read."""
        self._t.join(timeout=timeout)

    def signal(self, sig: int) -> None:
        if self.p.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL by PID (if still running) and reap."""
        if self.term_first and self.p.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
                self.p.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        if self.p.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._t.join(timeout=2)
        if not self._log.closed:
            if self.p.stdout is not None and self.lines:
                # Keep what the process printed next to its stderr, for post-mortems.
                self._log.write(("\n--- stdout ---\n" + "\n".join(self.lines) + "\n").encode())
            self._log.close()

    def log_text(self) -> str:
        try:
            self._log.flush()
        except ValueError:
            pass
        return self.log_path.read_text("utf-8", "replace")

    @classmethod
    def kill_all(cls) -> None:
        """End every process started through this class, by PID, newest first."""
        while cls.registry:
            cls.registry.pop().kill()


# ---------------------------------------------------------------- peers

def py_peer(*args: str, name: str = "py-peer", prefix: list[str] | None = None) -> Proc:
    return Proc(name, (prefix or []) + [sys.executable, str(PEERS / "py_peer.py"), *args])


def node_peer(*args: str, name: str = "node-peer", prefix: list[str] | None = None) -> Proc:
    return Proc(name, (prefix or []) + ["node", str(PEERS / "node_peer.js"), *args])


def peer(impl: str, *args: str, name: str | None = None, prefix: list[str] | None = None) -> Proc:
    if impl == "py":
        return py_peer(*args, name=name or "py-" + args[0], prefix=prefix)
    if impl == "node":
        return node_peer(*args, name=name or "node-" + args[0], prefix=prefix)
    raise ValueError(impl)


def start_upstream(impl: str, host: str = "127.0.0.1", port: int = 0,
                   prefix: list[str] | None = None, mode: str = "scripted") -> tuple[Proc, int]:
    """A third-party WebSocket server; returns (process, port) once it listens."""
    p = peer(impl, "server", host, str(port), mode, name=f"{impl}-upstream", prefix=prefix)
    ev = p.expect(lambda e: e.get("ev") == "listening", what="listening line")
    return p, int(ev["port"])


# ---------------------------------------------------------------- wspulse

class Wspulse:
    """`wspulse run` as a child process, configured through environment overrides."""

    def __init__(self, upstream_url: str, listen_host: str = "127.0.0.1",
                 extra_env: dict | None = None, prefix: list[str] | None = None,
                 admin_get=None, listen_port: int | None = None,
                 admin_port: int | None = None, stdout_to_log: bool = False):
        self.listen_host = listen_host
        self.port = listen_port or free_port()
        self.admin_port = admin_port or free_port()
        env = {
            "WSPULSE_LISTEN__ADDR": f"{listen_host}:{self.port}",
            "WSPULSE_ADMIN__ADDR": f"127.0.0.1:{self.admin_port}",
            "WSPULSE_UPSTREAM__URL": upstream_url,
            "WSPULSE_LOG__FORMAT": "json",
            "WSPULSE_LOG__LEVEL": "info",
            "NO_COLOR": "1",
        }
        env.update(extra_env or {})
        self.env = env
        self._admin_get = admin_get
        self.proc = Proc("wspulse", (prefix or []) + [str(wspulse_bin()), "run"], env=env,
                         strip_wspulse_env=True, stdout_to_log=stdout_to_log)
        self.pid = self.proc.pid
        self.wait_ready()

    @property
    def url(self) -> str:
        return f"ws://{self.listen_host}:{self.port}"

    def admin(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        if self._admin_get is not None:
            return self._admin_get(self.admin_port, path)
        return http_get(f"http://127.0.0.1:{self.admin_port}{path}", timeout)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + LIMIT
        last = None
        while time.monotonic() < deadline:
            if self.proc.p.poll() is not None:
                raise AssertionError(f"wspulse exited {self.proc.p.returncode}: {self.proc.log_text()}")
            try:
                status, _ = self.admin("/readyz", timeout=1.0)
                if status == 200:
                    return
                last = status
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise AssertionError(f"wspulse not ready within {LIMIT}s ({last}): {self.proc.log_text()}")

    def metrics(self) -> "Metrics":
        status, body = self.admin("/metrics")
        assert status == 200, status
        return Metrics(body)

    def wait_metric(self, pred, timeout: float = LIMIT, what: str = "metric condition") -> "Metrics":
        deadline = time.monotonic() + timeout
        m = None
        while time.monotonic() < deadline:
            m = self.metrics()
            if pred(m):
                return m
            time.sleep(0.05)
        raise AssertionError(f"{what} not met within {timeout}s; closures={m.closures() if m else None}")

    def sigterm(self) -> None:
        self.proc.signal(signal.SIGTERM)

    def log_records(self) -> list[dict]:
        out = []
        for line in self.proc.log_text().splitlines() + self.proc.lines:
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def bad_log_lines(self) -> list[str]:
        """Lines that show a panic or an ERROR-level record."""
        bad = []
        for line in self.proc.log_text().splitlines() + self.proc.lines:
            if "panicked at" in line or re.search(r'"level"\s*:\s*"ERROR"', line) or " ERROR " in line:
                bad.append(line)
        return bad

    def kill(self) -> None:
        self.proc.kill()


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


# ---------------------------------------------------------------- metrics

_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Metrics:
    """A parsed Prometheus text exposition."""

    def __init__(self, text: str):
        self.text = text
        self.samples: list[tuple[str, dict, float]] = []
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = _LINE.match(line)
            if not m:
                continue
            labels = dict(_LABEL.findall(m.group(3) or ""))
            self.samples.append((m.group(1), labels, float(m.group(4))))

    def sum(self, name: str, **labels) -> float:
        return sum(v for n, ls, v in self.samples
                   if n == name and all(ls.get(k) == str(x) for k, x in labels.items()))

    def closed(self, code=None, side=None, cause=None) -> int:
        want = {k: v for k, v in (("code", code), ("side", side), ("cause", cause)) if v is not None}
        return int(self.sum("wspulse_connections_closed_total", **want))

    def closures(self) -> dict[tuple[str, str, str], int]:
        """{(code, side, cause): count} for every non-zero series (summed over routes)."""
        out: dict[tuple[str, str, str], int] = {}
        for n, ls, v in self.samples:
            if n == "wspulse_connections_closed_total" and v:
                k = (ls.get("code"), ls.get("side"), ls.get("cause"))
                out[k] = out.get(k, 0) + int(v)
        return out

    @property
    def opened(self) -> int:
        return int(self.sum("wspulse_connections_opened_total"))

    @property
    def active(self) -> int:
        return int(self.sum("wspulse_connections_active"))

    @property
    def closed_total(self) -> int:
        return self.closed()

    def invariant_holds(self) -> bool:
        return self.opened == self.closed_total + self.active


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# ---------------------------------------------------------------- certificates (openssl)

def openssl(*args: str, cwd: Path) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, timeout=30)
    assert r.returncode == 0, f"openssl {' '.join(args)}: {r.stderr.decode()}"


class Pki:
    """A CA of the test's own, and the leaves it signs for localhost."""

    def __init__(self, d: Path):
        need(shutil.which("openssl") is not None, "openssl not installed")
        self.dir = d
        self.ca = d / "ca.crt"
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
                "-subj", "/CN=wspulse e2e CA",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
        (d / "leaf.ext").write_text(
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")

    def leaf(self, serial: int) -> tuple[str, str]:
        """A new key and certificate (serial `serial`), as PEM text."""
        name = f"leaf-{serial:x}"
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-out", f"{name}.key", cwd=self.dir)
        openssl("req", "-new", "-key", f"{name}.key", "-subj", "/CN=localhost",
                "-out", f"{name}.csr", cwd=self.dir)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-set_serial", hex(serial), "-days", "2", "-extfile", "leaf.ext",
                "-out", f"{name}.crt", cwd=self.dir)
        return (self.dir / f"{name}.crt").read_text(), (self.dir / f"{name}.key").read_text()

    def install(self, name: str, text: str) -> Path:
        """Write `name` by renaming a new file over it, as a Secret update does."""
        path = self.dir / name
        tmp = self.dir / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, path)
        return path

    def spki_hash(self, cert_pem: str) -> str:
        """base64(sha256(SubjectPublicKeyInfo)): what Chromium's SPKI flag takes."""
        p = self.dir / "spki.crt"
        p.write_text(cert_pem)
        cmd = (f"openssl x509 -in {p} -pubkey -noout | openssl pkey -pubin -outform der"
               " | openssl dgst -sha256 -binary | base64")
        r = subprocess.run(["bash", "-c", cmd], capture_output=True, timeout=30, check=True)
        return r.stdout.decode().strip()
