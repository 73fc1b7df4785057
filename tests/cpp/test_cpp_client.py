"""The C++ client (clients/cpp): built with CMake against Debian's gRPC, and its CTest tests run
against a live `tender dev` over TLS, including a watch across a server restart."""
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "support"))

from tender_dev import free_port, tender_dev  # noqa: E402

BUILD = ROOT / ".build-cpp"


@pytest.fixture(scope="module")
def built():
    subprocess.run(["cmake", "-S", str(ROOT / "clients" / "cpp"), "-B", str(BUILD), "-DCMAKE_BUILD_TYPE=RelWithDebInfo"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(BUILD), "-j", "2"], check=True, stdout=subprocess.DEVNULL)
    return BUILD


def environment(server, **extra):
    return dict(os.environ, TENDER_TARGET=server["target"], TENDER_CA_FILE=str(server["ca"]),
                TENDER_CREDENTIALS=str(server["state"] / "dev-client.json"), **extra)


def ctest(name):
    return ["ctest", "--test-dir", str(BUILD), "-R", f"^{name}$", "-V", "--no-tests=error"]


def test_the_example_builds_and_runs(built):
    state = pathlib.Path(tempfile.mkdtemp(prefix="tender-pytest-"))
    try:
        with tender_dev(state=state, ports=(free_port(), free_port())) as server:
            done = subprocess.run([str(built / "tender_example"), server["target"], str(server["ca"]),
                                   str(server["state"] / "dev-client.json")], capture_output=True, text=True,
                                  timeout=120)
            assert done.returncode == 0, done.stdout + done.stderr
            assert "PAYMENT_STATUS_REQUIRES_CAPTURE" in done.stdout
            assert "refused: REFUND_EXCEEDS_CAPTURED (field amount_minor)" in done.stdout
    finally:
        shutil.rmtree(state, ignore_errors=True)


def test_the_client_flow(built):
    state = pathlib.Path(tempfile.mkdtemp(prefix="tender-pytest-"))
    try:
        with tender_dev(state=state, ports=(free_port(), free_port())) as server:
            done = subprocess.run(ctest("client_flow"), env=environment(server), capture_output=True,
                                  text=True, timeout=400)
            print(done.stdout[-3000:])
            assert done.returncode == 0, done.stdout + done.stderr
            assert "flow: ok" in done.stdout
    finally:
        shutil.rmtree(state, ignore_errors=True)


def test_a_watch_resumes_across_a_restart(built):
    state = pathlib.Path(tempfile.mkdtemp(prefix="tender-pytest-"))
    sync = pathlib.Path(tempfile.mkdtemp(prefix="tender-cpp-sync-"))
    ports = (free_port(), free_port())
    try:
        with tender_dev(state=state, ports=ports) as server:
            running = subprocess.Popen(ctest("watch_restart"), env=environment(server, TENDER_SYNC_DIR=str(sync)),
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            deadline = time.monotonic() + 120
            while not (sync / "watching").exists():
                assert running.poll() is None, running.stdout.read()
                assert time.monotonic() < deadline, "the C++ watch never started"
                time.sleep(0.1)
        # Stopped; the watch is reconnecting. Started again on the same database and ports:
        with tender_dev(state=state, ports=ports):
            (sync / "restarted").write_text("restarted\n")
            output, _ = running.communicate(timeout=300)
            print(output[-3000:])
            assert running.returncode == 0, output
            assert "watch-restart: ok" in output
    finally:
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(sync, ignore_errors=True)
