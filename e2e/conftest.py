"""pytest fixtures for wspulse's end-to-end suite (see e2e/README.md)."""

import os
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

IMPLS = ["py", "node"]


def pytest_configure(config):
    logs = os.environ.get("E2E_LOGS")
    if not logs:
        os.environ["E2E_LOGS"] = tempfile.mkdtemp(prefix="wspulse-e2e-")


@pytest.fixture(autouse=True)
def _kill_everything():
    """Every process a test started is ended by PID when the test ends, pass or fail."""
    yield
    harness.Proc.kill_all()


def require_impl(impl: str) -> None:
    if impl == "node":
        ok, why = harness.node_ok()
        harness.need(ok, why)


@pytest.fixture(params=IMPLS, ids=lambda i: f"upstream={i}")
def upstream(request):
    """A scripted third-party upstream (Python websockets or Node ws): (impl, proc, port)."""
    require_impl(request.param)
    proc, port = harness.start_upstream(request.param)
    return request.param, proc, port


@pytest.fixture(params=IMPLS, ids=lambda i: f"client={i}")
def client_impl(request):
    require_impl(request.param)
    return request.param


@pytest.fixture
def proxy(upstream):
    """wspulse in front of `upstream`."""
    _, _, port = upstream
    return harness.Wspulse(f"ws://127.0.0.1:{port}")


def pytest_report_header(config):
    try:
        binary = str(harness.wspulse_bin())
    except RuntimeError as e:
        binary = str(e)
    import websockets
    return [f"wspulse binary: {binary}",
            f"process logs: {os.environ.get('E2E_LOGS')}",
            f"python websockets {websockets.__version__}"]
