"""The release artifact (deploy/release.sh) runs from a minimal Debian root, as the Containerfile's
runtime stage would hold it: `debootstrap --variant=minbase` plus exactly the packages in
deploy/runtime-packages.txt, the archive unpacked into /opt/tender, a non-root user. In its own
mount namespace the root is bind-mounted read-only (with /proc and a tmpfs /tmp, as Kubernetes
gives a read-only pod), and `tender migrate`, `tender merchant/client create`, the provider
simulator and `tender serve` run from it with chroot as uid 10001, secrets read from files
(TENDER_*_FILE), against a PostgreSQL and a Redis on loopback. A client outside makes a payment
and a refund over TLS; SIGTERM stops the server with exit status 0.

Set TENDER_RELEASE_ARCHIVE to test an archive already built; otherwise deploy/release.sh builds it."""
import base64
import hashlib
import json
import os
import pathlib
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "support"))

from cluster import Postgres, Process, accepting, free_port, https_ready, wait_for, workspace  # noqa: E402
from tender_dev import binary  # noqa: E402

UID = 10001
API_KEY = "sk_test_minimal_root"
PACKAGES = [line.strip() for line in (ROOT / "deploy" / "runtime-packages.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def debian_release():
    fields = dict(line.split("=", 1) for line in pathlib.Path("/etc/os-release").read_text().splitlines() if "=" in line)
    return fields.get("VERSION_CODENAME", "bookworm").strip('"')


def debian_mirror():
    sources = pathlib.Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    return "http://deb.debian.org/debian"


def minimal_root(into):
    """A minbase root with the runtime packages, debootstrapped once and kept as a tarball."""
    assert shutil.which("debootstrap"), "debootstrap is needed (deploy/setup.sh installs it)"
    release = debian_release()
    key = hashlib.sha256(f"{release} {' '.join(PACKAGES)}".encode()).hexdigest()[:12]
    cache = ROOT / ".build-rootfs"
    tarball = cache / f"{release}-minbase-{key}.tar"
    if not tarball.exists():
        cache.mkdir(exist_ok=True)
        scratch = pathlib.Path(tempfile.mkdtemp(prefix="tender-debootstrap-"))
        started = time.monotonic()
        (cache / "packages").mkdir(exist_ok=True)
        done = subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                               f"--cache-dir={cache / 'packages'}", release, str(scratch / "root"), debian_mirror()],
                              capture_output=True, text=True, timeout=1800)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        print(f"\n[release] debootstrap {release} minbase + {len(PACKAGES)} packages in {time.monotonic() - started:.0f} s")
        subprocess.run(["tar", "-C", str(scratch / "root"), "-cf", str(tarball), "."], check=True)
        shutil.rmtree(scratch, ignore_errors=True)
    into.mkdir()
    subprocess.run(["tar", "-C", str(into), "-xf", str(tarball)], check=True)


def release_archive():
    given = os.environ.get("TENDER_RELEASE_ARCHIVE")
    if given:
        return pathlib.Path(given)
    started = time.monotonic()
    done = subprocess.run([str(ROOT / "deploy" / "release.sh")], capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-5000:]
    print(f"\n[release] deploy/release.sh in {time.monotonic() - started:.0f} s")
    return pathlib.Path(done.stdout.strip().splitlines()[-1])


def in_root(root, arguments, environment, log):
    """`arguments` run in `root` (chroot, uid 10001) in a mount namespace of their own where the
    root is read-only; it first checks that the root cannot be written."""
    script = f"""set -e
mount --bind {root} {root}
mount -t proc proc {root}/proc
mount -t tmpfs -o size=16m,mode=1777 tmpfs {root}/tmp
mount -o remount,bind,ro {root}
if chroot --userspec={UID}:{UID} {root} /usr/bin/touch /opt/tender/written 2>/dev/null; then
  echo "the root is writable"; exit 97
fi
exec chroot --userspec={UID}:{UID} {root} "$@"
"""
    sink = open(log, "ab")
    process = subprocess.Popen(["unshare", "--mount", "--fork", "--", "sh", "-c", script, "sh", *arguments],
                               stdout=sink, stderr=subprocess.STDOUT,
                               env={"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", **environment})
    sink.close()
    return process


def descendant(pid, name):
    """The pid of the process named `name` below `pid`."""
    for child in pathlib.Path(f"/proc/{pid}/task").glob("*/children"):
        for each in child.read_text().split():
            if pathlib.Path(f"/proc/{each}/comm").read_text().strip() == name:
                return int(each)
            found = descendant(each, name)
            if found:
                return found
    return None


@pytest.fixture()
def world():
    directory = workspace("tender-release-")
    archive = release_archive()
    root = directory / "root"
    minimal_root(root)
    (root / "opt" / "tender").mkdir(parents=True)
    subprocess.run(["tar", "-C", str(root / "opt" / "tender"), "--strip-components=1", "-xzf", str(archive)], check=True)
    with open(root / "etc" / "passwd", "a") as passwd:
        passwd.write(f"tender:x:{UID}:{UID}::/nonexistent:/usr/sbin/nologin\n")
    with open(root / "etc" / "group", "a") as group:
        group.write(f"tender:x:{UID}:\n")
    tls, secrets = root / "etc" / "tender" / "tls", root / "etc" / "tender" / "secrets"
    tls.mkdir(parents=True)
    secrets.mkdir(parents=True)
    for name in ("ca.pem", "server.pem", "server-key.pem"):
        shutil.copy(directory / name, tls / name)
    (secrets / "key-encryption-key").write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    (secrets / "provider-api-key").write_text(API_KEY + "\n")
    for path in [tls, secrets, *tls.iterdir(), *secrets.iterdir()]:
        os.chown(path, UID, UID)
        path.chmod(0o500 if path.is_dir() else 0o400)
    postgres = Postgres(directory / "postgres")
    postgres.start()
    redis_port, sim_port, grpc_port, http_port = free_port(), free_port(), free_port(), free_port()
    redis = Process("redis", directory, ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port),
                                         "--save", "", "--appendonly", "no"])
    redis.start()
    wait_for(lambda: accepting(redis_port), 30, "Redis listening")
    environment = {
        "TENDER_DATABASE_URL": postgres.url,
        "TENDER_REDIS_URL": f"redis://127.0.0.1:{redis_port}",
        "TENDER_KEY_ENCRYPTION_KEY_FILE": "/etc/tender/secrets/key-encryption-key",
        "TENDER_PROVIDER_API_KEY_FILE": "/etc/tender/secrets/provider-api-key",
        "TENDER_PROVIDER_URL": f"http://127.0.0.1:{sim_port}",
        "TENDER_TLS_CERT": "/etc/tender/tls/server.pem",
        "TENDER_TLS_KEY": "/etc/tender/tls/server-key.pem",
        "TENDER_GRPC_ADDRESS": f"127.0.0.1:{grpc_port}",
        "TENDER_HTTP_ADDRESS": f"127.0.0.1:{http_port}",
        "TENDER_DRAIN_DELAY": "1s",
    }
    running = []

    def run(name, *arguments, wait=True):
        process = in_root(root, ["/opt/tender/bin/" + arguments[0], *arguments[1:]], environment,
                          directory / f"{name}.log")
        running.append(process)
        if wait:
            assert process.wait(timeout=300) == 0, (directory / f"{name}.log").read_text()[-3000:]
            return (directory / f"{name}.log").read_text()
        return process

    yield {"directory": directory, "root": root, "run": run, "grpc_port": grpc_port, "http_port": http_port,
           "sim_port": sim_port, "archive": archive}
    for process in running + [redis.process]:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    try:
        postgres.stop()
    except subprocess.CalledProcessError:
        pass
    shutil.rmtree(directory, ignore_errors=True)


def test_release_runs_from_a_minimal_read_only_root(world):
    run, directory = world["run"], world["directory"]
    simulator = run("simulator", "tender-provider-sim", "--address", f"127.0.0.1:{world['sim_port']}",
                    "--api-key", API_KEY, wait=False)
    wait_for(lambda: accepting(world["sim_port"]), 60, "the simulator listening")
    run("migrate", "tender", "migrate")
    run("merchant", "tender", "merchant", "create", "--id", "mer_release", "--name", "Release")
    created = run("client", "tender", "client", "create", "--merchant", "mer_release", "--scopes",
                  "payments:read,payments:write,refunds:read,refunds:write")
    fields = dict(line.split(":", 1) for line in created.splitlines() if ":" in line)
    credentials = directory / "client.json"
    credentials.write_text(json.dumps({"clientID": fields["client_id"].strip(),
                                       "clientSecret": fields["client_secret"].strip()}))
    server = run("serve", "tender", "serve", wait=False)
    context = ssl.create_default_context(cafile=str(directory / "ca.pem"))

    def ready():
        if server.poll() is not None:
            pytest.fail("tender serve exited:\n" + (directory / "serve.log").read_text()[-3000:])
        return https_ready(world["http_port"], context)
    wait_for(ready, 120, "tender serve from the minimal root becoming ready")
    pid = descendant(server.pid, "tender")
    status = dict(line.split(":", 1) for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines())
    assert status["Uid"].split()[0] == str(UID)
    assert os.readlink(f"/proc/{pid}/root") == str(world["root"])

    # A client outside: the operator CLI over TLS.
    def cli(*arguments):
        done = subprocess.run([binary(), *arguments, "--target", f"localhost:{world['grpc_port']}", "--ca-file",
                               str(directory / "ca.pem"), "--credentials", str(credentials), "--json"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (arguments, done.stdout, done.stderr,
                                      (directory / "serve.log").read_text()[-3000:])
        return json.loads(done.stdout)
    payment = cli("payments", "create", "--amount", "25.00", "--currency", "EUR", "--payment-method",
                  "pm_card_visa", "--capture", "automatic")
    assert payment["status"] == "PAYMENT_STATUS_SUCCEEDED"
    refund = cli("refunds", "create", payment["payment_id"], "--amount-minor", "500")
    assert refund["status"] == "REFUND_STATUS_SUCCEEDED"
    assert cli("payments", "get", payment["payment_id"])["amount_refunded_minor"] == "500"

    os.kill(pid, signal.SIGTERM)
    assert server.wait(timeout=60) == 0, (directory / "serve.log").read_text()[-3000:]
    simulator.send_signal(signal.SIGTERM)
    size = sum(path.stat().st_size for path in (world["root"] / "opt" / "tender" / "bin").iterdir())
    print(f"\n[release] {world['archive'].name}: {world['archive'].stat().st_size / 2**20:.1f} MiB archive, "
          f"{size / 2**20:.1f} MiB of binaries; ran from a {len(PACKAGES)}-package minbase root, read-only, uid {UID}")
