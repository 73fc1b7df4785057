"""Runs a real Tender server for Python tests: `tender dev --ephemeral` (its own PostgreSQL, Redis,
provider simulator, dev TLS and a dev client holding every scope), stopped with SIGINT afterwards."""
import contextlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
# The webhook secrets of the client tests' server: a Standard Webhooks provider it is given, and
# `tender dev`'s own Stripe secret, shared with its simulator.
STANDARD_WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STRIPE_WEBHOOK_SECRET = "whsec_tender_dev"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def binary():
    path = os.environ.get("TENDER_BIN", str(ROOT / ".build" / "debug" / "tender"))
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"tender binary not found at {path}; build it first (swift build) or set TENDER_BIN")
    return path


@contextlib.contextmanager
def tender_dev(arguments=(), environment=None, log_level=None, state=None, ports=None):
    """Yields the running server: target, bridge, binary, ca, client_id, client_secret, pid, log,
    state, ports. Fails if it does not start within 120 s or does not stop cleanly. Logs at
    `log_level`; by default at warning, or at info while the card-data scan collects the logs.

    With `state` (a folder) and `ports` ((grpc, http)) the server keeps its database there when it
    stops (no --ephemeral), so a second `tender_dev` with the same state and ports is the same
    server restarted; the caller removes the folder."""
    executable = binary()
    # The card-data scan reads every log line at info and every row (tests/support/card_scan.py).
    scan_dir = os.environ.get("TENDER_CARD_SCAN_DIR")
    if log_level is None:
        log_level = "info" if scan_dir else "warning"
    # PostgreSQL runs as the unprivileged postgres user when the tests run as root, so the state
    # folder must be reachable by it (pytest's own temporary folders are private).
    owned = state is None
    if owned:
        state = pathlib.Path(tempfile.mkdtemp(prefix="tender-pytest-"))
    state = pathlib.Path(state)
    state.chmod(0o755)
    port, http_port = ports or (free_port(), free_port())
    log = state / "tender-dev.out"
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [executable, "dev", "--state-dir", str(state), "--grpc-address", f"127.0.0.1:{port}",
             "--http-address", f"127.0.0.1:{http_port}", *(["--ephemeral"] if owned else []),
             "--log-level", log_level, *arguments],
            stdout=sink, stderr=subprocess.STDOUT, env=dict(os.environ, **(environment or {})))
    deadline = time.monotonic() + 120
    while "Tender is serving" not in log.read_text():
        if process.poll() is not None:
            raise RuntimeError("tender dev exited early:\n" + log.read_text())
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("tender dev did not start within 120 s:\n" + log.read_text())
        time.sleep(0.1)
    client = json.loads((state / "dev-client.json").read_text())
    yield {
        "target": f"localhost:{port}",
        "port": port,
        "bridge": f"https://localhost:{http_port}",
        "binary": executable,
        "ca": state / "tls" / "ca.pem",
        "client_id": client["clientID"],
        "client_secret": client["clientSecret"],
        "pid": process.pid,
        "log": log,
        "state": state,
        "ports": (port, http_port),
    }
    if scan_dir:
        pid_file = state / "postgres" / "data" / "postmaster.pid"
        if pid_file.exists() and process.poll() is None:
            subprocess.run([sys.executable, str(ROOT / "tests" / "support" / "card_scan.py"), "dump",
                            "--port", pid_file.read_text().split("\n")[3], "--out", scan_dir,
                            "--label", f"tender-dev-{process.pid}"], check=True)
    process.send_signal(signal.SIGINT)
    try:
        returncode = process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    output = log.read_text()
    if scan_dir:
        shutil.copy(log, pathlib.Path(scan_dir) / f"tender-dev-{process.pid}.log")
    if owned:
        shutil.rmtree(state, ignore_errors=True)
    assert returncode == 0, output
