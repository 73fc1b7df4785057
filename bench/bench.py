#!/usr/bin/env python3
"""Tender's benchmark, in one sitting on one machine (run by deploy/bench.sh after release builds).

Each part is a process of its own: PostgreSQL (fsync and synchronous_commit on), Redis, the
provider simulator, `tender serve` (the full interceptor chain; the per-client rate limit raised out
of the way, the limiter still runs on every call), the load drivers, and gRPC C++'s own server as
the reference for Health. In turn:

  1. the RSS of a `tender serve` of its own, idle and holding 1,000 and 10,000 idle TLS
     connections (HTTP/2 set up);
  2. h2load on grpc.health.v1.Health/Check over TLS: Tender, then the C++ server;
  3. h2load on GetPayment over TLS, the same load as Health's (one seeded payment, read by every
     request with one access token; OK and failed calls counted from Tender's own metrics);
  4. tender-load on CreatePayment, CreateRefund, GetPayment and ListPayments (and Tender's RSS
     after them);
  5. pgbench's TPC-B on a database of the same PostgreSQL cluster, same client count;
  6. at scale: GetPayment and ListPayments with 10,000 and then 10,000,000 payments stored (a
     database and `tender serve` of their own; rows loaded with COPY by bench/payment_rows.py).

For each phase it reads, from /proc, the CPU time every process spent (PostgreSQL: the postmaster
and all its children, exited ones included), and from PostgreSQL's statistics the commits, rows and
WAL bytes written; it prints a Markdown table and writes the same figures as JSON.
"""
import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))

import cluster  # noqa: E402
import payment_rows  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
API_KEY = "sk_test_bench"


# ---- CPU time from /proc ------------------------------------------------------------------------

def _stat(pid):
    """(ppid, utime + stime, cutime + cstime) of `pid` in clock ticks, or None once it is gone."""
    try:
        text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    # After the command: state ppid ... utime(14) stime(15) cutime(16) cstime(17), 1-based in stat.
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def _all_stats():
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat:
                stats[int(entry)] = stat
    return stats


def cpu_seconds(pid, tree=False):
    """CPU seconds `pid` has used; with `tree`, plus its live children's and those it reaped."""
    if not tree:
        stat = _stat(pid)
        return 0.0 if stat is None else stat[1] / TICKS
    stats = _all_stats()
    own = stats.get(pid)
    if own is None:
        return 0.0
    total = own[1] + own[2] + sum(stat[1] for child, stat in stats.items() if stat[0] == pid)
    return total / TICKS


# ---- PostgreSQL ---------------------------------------------------------------------------------

class Database:
    """The benchmark's PostgreSQL cluster: durable (fsync and synchronous_commit at their defaults,
    on), set alike for Tender and pgbench."""

    SETTINGS = ("shared_buffers=1GB", "max_connections=200", "max_wal_size=4GB", "checkpoint_timeout=30min")

    def __init__(self, postgres):
        self.postgres = postgres

    def started(self):
        self.postmaster = int(pathlib.Path(self.postgres.data, "postmaster.pid").read_text().split()[0])
        for setting in ("fsync", "synchronous_commit", "server_version", "shared_buffers", "wal_level"):
            setattr(self, setting, self.postgres.query(f"SHOW {setting}")[0][0])

    def snapshot(self, database):
        """Commits, rows written and fetched of `database`, HOT updates, and the cluster's WAL."""
        row = self.postgres.query(
            "SELECT pg_stat_clear_snapshot();"
            f" SELECT d.xact_commit, d.tup_inserted, d.tup_updated, d.tup_deleted,"
            f" (SELECT coalesce(sum(n_tup_hot_upd), 0) FROM pg_stat_user_tables),"
            f" (SELECT wal_bytes FROM pg_stat_wal), (SELECT wal_records FROM pg_stat_wal)"
            f" FROM pg_stat_database d WHERE d.datname = '{database}'")[-1]
        names = ("commits", "inserted", "updated", "deleted", "hot_updated", "wal_bytes", "wal_records")
        return dict(zip(names, (float(value) for value in row)))

    def stats_flushed(self):
        # Backends report their counters at most once a second (PostgreSQL 15's shared statistics).
        time.sleep(1.1)


def statistics_delta(before, after, operations, database):
    delta = {name: after[name] - before[name] for name in before}
    per = lambda value: round(value / operations, 2) if operations else None  # noqa: E731
    return {
        "commits_per_op": per(delta["commits"]),
        "rows_per_op": per(delta["inserted"] + delta["updated"] + delta["deleted"]),
        "inserts_per_op": per(delta["inserted"]),
        "updates_per_op": per(delta["updated"]),
        "hot_updates_per_op": per(delta["hot_updated"]) if database == "postgres" else None,
        "wal_bytes_per_op": per(delta["wal_bytes"]),
        "wal_records_per_op": per(delta["wal_records"]),
    }


# ---- Processes and phases -----------------------------------------------------------------------

class Watched:
    """The processes whose CPU a phase accounts for, by name."""

    def __init__(self):
        self.pids = {}

    def add(self, name, pid, tree=False):
        self.pids[name] = (pid, tree)

    def sample(self):
        return {name: cpu_seconds(pid, tree) for name, (pid, tree) in self.pids.items()}


def per_op_micros(before, after, operations, extra=None):
    figures = {name: (after[name] - before[name]) for name in before}
    figures.update(extra or {})
    return {name: round(seconds * 1e6 / operations, 1) if operations else None for name, seconds in figures.items()}


def run_child(arguments, log, **kwargs):
    """Runs `arguments` to the end: (exit status, CPU seconds it used, its stdout)."""
    with open(log, "wb") as sink:
        process = subprocess.Popen(arguments, stdout=subprocess.PIPE, stderr=sink, **kwargs)
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_utime + usage.ru_stime, output.decode(errors="replace")


# ---- Memory ------------------------------------------------------------------------------------

def rss_kib(pid):
    """Resident memory of `pid` in KiB (VmRSS)."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise SystemExit(f"bench: no VmRSS for {pid}")


# The HTTP/2 client preface and an empty SETTINGS frame: what a gRPC client sends first.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def idle_connections(settings, work, port, pid):
    """RSS of a `tender serve` of its own (`pid`), idle and holding 1,000 and 10,000 idle TLS
    connections: each past the TLS handshake (ALPN h2) and the HTTP/2 preface and SETTINGS
    exchange, then quiet, as a client that connected and has not called yet. Measured 2 s after
    the last one connected; the connections are closed afterwards."""
    context = ssl.create_default_context(cafile=str(work / "ca.pem"))
    context.set_alpn_protocols(["h2"])
    time.sleep(2)
    idle = rss_kib(pid)
    rows = [{"connections": 0, "rss_kib": idle, "bytes_per_connection": None}]
    held = []
    try:
        for count in sorted(settings.idle_connections):
            started = time.monotonic()
            while len(held) < count:
                connection = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30),
                                                 server_hostname="localhost")
                if connection.selected_alpn_protocol() != "h2":
                    raise SystemExit("bench: the server did not choose h2")
                connection.sendall(PREFACE)
                if len(connection.recv(9)) < 9:  # the server's SETTINGS frame header
                    raise SystemExit("bench: the server closed an idle connection at once")
                held.append(connection)
            opened = time.monotonic() - started
            time.sleep(2)
            rss = rss_kib(pid)
            rows.append({"connections": count, "rss_kib": rss,
                         "bytes_per_connection": round((rss - idle) * 1024 / count),
                         "seconds_to_open": round(opened, 1)})
            print(f"  {count} idle TLS connections: RSS {rss / 1024:.1f} MiB "
                  f"({rows[-1]['bytes_per_connection']:,} bytes each over idle {idle / 1024:.1f} MiB)", flush=True)
    finally:
        for connection in held:
            connection.close()
    return rows


def h2load(settings, work, url, name, watched, operation=None, body=None, headers=(), handled=None):
    """One warm-up and one measured h2load run against `url`. The request is `body` (an empty
    message, valid for Health, by default) with `headers`. h2load counts HTTP responses, and gRPC
    answers a failed call with HTTP 200 too: with `handled` (a function giving the server's count
    of calls answered OK and of the others), failed calls are the server's own count over the
    measured run, and OK ones the lesser of its count and h2load's."""
    if body is None:
        body = work / "empty.bin"
        body.write_bytes(b"\x00\x00\x00\x00\x00")
    extra = [argument for header in headers for argument in ("-H", header)]
    common = ["h2load", "-c", str(settings.connections), "-m", str(settings.streams), "-t", "1",
              "-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers", *extra]
    trailers = subprocess.run(["nghttp", "-v", "-d", str(body), "-H", "content-type: application/grpc", "-H",
                               "te: trailers", *extra, url], capture_output=True, text=True, errors="replace").stdout
    if "grpc-status: 0" not in trailers:
        tail = "\n".join(line for line in trailers.splitlines() if "authorization" not in line)[-2000:]
        raise SystemExit(f"bench: {name}: {url.rsplit('/', 2)[-2]}/{url.rsplit('/', 1)[-1]} did not end with "
                         f"grpc-status 0:\n{tail}")
    run_child([*common, "-D", str(settings.warmup), url], work / f"h2load-{name}-warmup.err")
    log = work / f"h2load-{name}.tsv"
    recorder = start_perf(settings, work / f"perf-health-{name}.data")
    counted_before = handled() if handled else None
    before = watched.sample()
    code, load_cpu, output = run_child([*common, "-D", str(settings.duration), f"--log-file={log}", url],
                                       work / f"h2load-{name}.err")
    after = watched.sample()
    counted_after = handled() if handled else None
    stop_perf(recorder)
    if code != 0:
        raise SystemExit(f"bench: h2load against {name} failed:\n{output}")
    match = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", output)
    finished = re.search(r"finished in ([\d.]+)(m?s)", output)
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    latencies = sorted(int(line.split("\t")[2]) for line in open(log) if line.strip())
    succeeded, failed = int(match.group(2)), int(match.group(3))
    responses = succeeded
    if handled:
        # The server also answers the calls h2load left in flight when it stopped, which h2load
        # does not count: the lesser of the two counts is the calls answered OK within the run.
        succeeded = min(counted_after[0] - counted_before[0], responses)
        failed = counted_after[1] - counted_before[1] + failed
    return {
        "operation": operation or f"Health/Check ({name})", "callers": settings.connections * settings.streams,
        "ok": succeeded, "failed": failed, "seconds": round(seconds, 2),
        "throughput": round(succeeded / seconds, 1), **percentiles(latencies),
        "cpu_us_per_op": per_op_micros(before, after, succeeded, {"load driver": load_cpu}),
        **({"http_responses": responses} if handled else {}),
    }


def handled_calls(http_port, ca, method):
    """Tender's count of `method`'s calls answered OK and answered otherwise, from its metrics."""
    context = ssl.create_default_context(cafile=str(ca))
    with urllib.request.urlopen(f"https://127.0.0.1:{http_port}/metrics", context=context, timeout=10) as response:
        text = response.read().decode()
    ok = other = 0
    for line in text.splitlines():
        if line.startswith("grpc_server_handled_total{") and f'grpc_method="{method}"' in line:
            value = int(float(line.rsplit(" ", 1)[1]))
            if 'grpc_code="OK"' in line:
                ok += value
            else:
                other += value
    return ok, other


def get_payment_h2load(settings, work, grpc_port, http_port, client, watched):
    """GetPayment under the same h2load load as Health: tender-load seeds a payment and writes the
    request and a fresh token's header, which every h2load request then sends."""
    folder = work / "h2load-get"
    folder.mkdir(exist_ok=True)
    code, _, output = run_child([str(settings.bin / "tender-load"), "--address", f"127.0.0.1:{grpc_port}", "--ca",
                                 str(work / "ca.pem"), "--credentials", str(client), "--h2load-request", str(folder)],
                                work / "h2load-get-request.err")
    if code != 0:
        raise SystemExit(f"bench: tender-load --h2load-request failed (exit {code}):\n{output}")
    authorization = (folder / "authorization").read_text()
    return h2load(settings, work, f"https://127.0.0.1:{grpc_port}/tender.payments.v1.PaymentService/GetPayment",
                  "GetPayment", watched, operation="GetPayment (h2load)", body=folder / "get-payment.bin",
                  headers=[f"authorization: {authorization}"],
                  handled=lambda: handled_calls(http_port, work / "ca.pem", "GetPayment"))


def start_perf(settings, path):
    """With --perf, every process on the machine recorded with call graphs until stop_perf
    (`perf report -i FILE --sort comm,dso`)."""
    if not settings.perf:
        return None
    return subprocess.Popen(["perf", "record", "-a", "-g", "-F", "499", "-o", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_perf(recorder):
    if recorder:
        recorder.send_signal(2)
        recorder.wait()


def percentiles(latencies_us):
    def at(p):
        return round(latencies_us[min(len(latencies_us) - 1, int(p / 100 * len(latencies_us)))] / 1000, 2)
    return {"p50_ms": at(50), "p90_ms": at(90), "p99_ms": at(99), "p99.9_ms": at(99.9)}


# The phases tender-load measures, by its names.
RPCS = ["create", "refund", "get", "list"]
PHASES = ["memory", "health", "reference", "get-h2load", *RPCS, "pgbench", "scale"]


def tender_load(settings, work, address, ca, client, watched, database, rpcs, arguments=(), name="tender-load",
                snapshot_database="postgres", callers=None):
    """tender-load over the payment RPCs `rpcs`; CPU and PostgreSQL's figures sampled at each
    measured phase's start and end (tender-load says when on its output, a line at a time)."""
    json_path = work / f"{name}.json"
    arguments = [str(settings.bin / "tender-load"), "--address", address, "--ca", str(ca), "--credentials",
                 str(client), "--concurrency", str(callers or settings.clients), "--connections", "4", "--duration",
                 str(settings.duration), "--warmup", str(settings.warmup), "--json", str(json_path),
                 *arguments, "--rpcs", *rpcs]
    log = open(work / f"{name}.out", "w")
    process = subprocess.Popen(arguments, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watched.add("load driver", process.pid)
    marks = []
    current = None
    recorder = None
    for line in process.stdout:
        log.write(line)
        log.flush()
        print(f"  {line.rstrip()}", flush=True)
        if line.startswith("tender-load: measuring "):
            rpc = line.split()[-1]
            current = (rpc, watched.sample(), database.snapshot(snapshot_database))
            recorder = start_perf(settings, work / f"perf-{rpc}.data")
        elif line.startswith("== ") and current:
            stop_perf(recorder)
            recorder = None
            cpu = watched.sample()
            database.stats_flushed()
            marks.append((*current, cpu, database.snapshot(snapshot_database)))
            current = None
    process.wait()
    del watched.pids["load driver"]
    if process.returncode != 0:
        raise SystemExit(f"bench: tender-load failed (exit {process.returncode}); see {work / f'{name}.out'}")
    phases = {phase["rpc"]: phase for phase in json.loads(json_path.read_text())}
    rows = []
    for rpc, cpu_before, db_before, cpu_after, db_after in marks:
        phase = phases[rpc]
        ok = phase["succeeded"]
        rows.append({
            "operation": rpc, "callers": callers or settings.clients, "ok": ok, "failed": phase["requests"] - ok,
            "errors": phase["errors"], "seconds": round(phase["seconds"], 2), "throughput": round(ok / phase["seconds"], 1),
            **{f"{name}_ms": round(phase[key], 2) for name, key in
               (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p99.9", "p999"))},
            "cpu_us_per_op": per_op_micros(cpu_before, cpu_after, ok),
            "postgres_per_op": statistics_delta(db_before, db_after, ok, snapshot_database),
        })
    return rows


def scale(settings, work, backends, database, serve):
    """GetPayment, ListPayments' first page and the first page of failed payments with few and
    with many payments stored: a database of its own on the same cluster, and a `tender serve` on
    it. The payments (one merchant's) are loaded with COPY in steps, one per count of
    `--scale-rows`; after each step VACUUM ANALYZE and a checkpoint, then tender-load reads
    payments drawn at random from all those stored, with `--scale-clients` callers: few enough that
    a latency is the reads' own, not mostly the wait behind 63 other callers on 2 cores."""
    name = "tender_scale"
    url = database.postgres.url.replace("/postgres?", f"/{name}?")
    database.postgres.query(f"DROP DATABASE IF EXISTS {name}")
    database.postgres.query(f"CREATE DATABASE {name}")
    environment = dict(backends.environment, TENDER_DATABASE_URL=url)
    merchant = "mer_scale"
    backends.admin("migrate", environment=environment)
    backends.admin("merchant", "create", "--id", merchant, "--name", "Scale", environment=environment)
    client_id, secret = backends.create_client(merchant, environment=environment)
    client = work / "scale-client.json"
    client.write_text(json.dumps({"clientID": client_id, "clientSecret": secret}))
    tender, port = serve(environment)
    watched = Watched()
    watched.add("tender", tender.process.pid)
    watched.add("postgres", database.postmaster, tree=True)
    watched.add("redis", backends.redis.process.pid)
    rows, steps = [], []
    stored, total = 0, max(settings.scale_rows)
    for count in sorted(settings.scale_rows):
        print(f"== {count:,} payments stored: loading {count - stored:,} with COPY", flush=True)
        seconds = payment_rows.copy(url, merchant, stored, count, total, lambda done, elapsed: print(
            f"  {done:,} rows in {elapsed:.0f} s", flush=True))
        stored = count
        began = time.monotonic()
        subprocess.run(["psql", url, "-Xq", "-c", "VACUUM (ANALYZE) payments", "-c", "CHECKPOINT"], check=True)
        vacuumed = time.monotonic() - began
        size = int(subprocess.run(["psql", url, "-XAtq", "-c", "SELECT pg_total_relation_size('payments')"],
                                  check=True, capture_output=True, text=True).stdout)
        ids = work / f"scale-{count}.ids"
        ids.write_text("\n".join(payment_rows.sample(0, count, 1000)) + "\n")
        measured = tender_load(settings, work, f"127.0.0.1:{port}", work / "ca.pem", client, watched, database,
                               ["get", "list", "list-failed"], ["--payment-ids", str(ids)], name=f"scale-{count}",
                               snapshot_database=name, callers=settings.scale_clients)
        for row in measured:
            row["stored"] = count
            row["operation"] = f"{row['operation']}, {count:,} stored"
        rows += measured
        steps.append({"stored": count, "copy_s": round(seconds, 1), "vacuum_analyze_checkpoint_s": round(vacuumed, 1),
                      "payments_bytes": size, **{
                          f"{row['operation'].split(',')[0]} {percentile}": row[f"{percentile}_ms"]
                          for row in measured for percentile in ("p50", "p99")}})
    tender.process.send_signal(2)
    tender.process.wait(timeout=60)
    return rows, steps


def pgbench(settings, work, database, watched):
    url = database.postgres.url.replace("/postgres?", "/pgbench_tpcb?")
    database.postgres.query("DROP DATABASE IF EXISTS pgbench_tpcb")
    database.postgres.query("CREATE DATABASE pgbench_tpcb")
    init = subprocess.run(["pgbench", "-i", "-q", "-I", "dtGvp", "-s", str(settings.clients), url],
                          capture_output=True, text=True)
    if init.returncode != 0:
        raise SystemExit(f"bench: pgbench -i failed:\n{init.stderr}")
    database.postgres.query("CHECKPOINT")
    before, db_before = watched.sample(), database.snapshot("pgbench_tpcb")
    code, load_cpu, output = run_child(
        ["pgbench", "-c", str(settings.clients), "-j", "2", "-T", str(settings.duration), "-r",
         "--log", f"--log-prefix={work / 'pgbench'}", url], work / "pgbench.err", cwd=work)
    after = watched.sample()
    database.stats_flushed()
    db_after = database.snapshot("pgbench_tpcb")
    if code != 0:
        raise SystemExit(f"bench: pgbench failed:\n{output}")
    done = int(re.search(r"number of transactions actually processed: (\d+)", output).group(1))
    failed = re.search(r"number of failed transactions: (\d+)", output)
    tps = float(re.search(r"tps = ([\d.]+) \(without initial connection time\)", output).group(1))
    latencies = []
    for log in work.glob("pgbench.[0-9]*"):
        # pgbench's per-transaction log: client, transaction, latency (µs), script, time, µs.
        latencies += [int(line.split()[2]) for line in open(log) if line.strip()]
    latencies.sort()
    return {
        "operation": "pgbench TPC-B", "callers": settings.clients, "ok": done,
        "failed": int(failed.group(1)) if failed else 0, "seconds": round(done / tps, 2), "throughput": round(tps, 1),
        **percentiles(latencies),
        "cpu_us_per_op": per_op_micros(
            {name: before[name] for name in ("postgres",)}, {name: after[name] for name in ("postgres",)}, done,
            {"load driver": load_cpu}),
        "postgres_per_op": statistics_delta(db_before, db_after, done, "pgbench_tpcb"),
    }


# ---- The run ------------------------------------------------------------------------------------

def machine(database):
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    memory = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    swift = subprocess.run(["swift", "--version"], capture_output=True, text=True).stdout.splitlines()
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(memory / 1048576, 1),
        "kernel": platform.release(), "swift": swift[0] if swift else "?",
        "postgresql": database.server_version, "fsync": database.fsync,
        "synchronous_commit": database.synchronous_commit, "shared_buffers": database.shared_buffers,
    }


def scale_ratio(rows, operation):
    """`operation`'s p99 with the most payments stored over its p99 with the fewest."""
    measured = sorted((row for row in rows if row.get("stored") and row["operation"].split(",")[0] == operation),
                      key=lambda row: row["stored"])
    if len(measured) < 2 or not measured[0]["p99_ms"]:
        return None
    return round(measured[-1]["p99_ms"] / measured[0]["p99_ms"], 3)


def ratios(rows, memory):
    by = {row["operation"]: row["throughput"] for row in rows}
    def ratio(a, b):
        return round(by[a] / by[b], 3) if by.get(a) and by.get(b) else None
    create = next((row for row in rows if row["operation"] == "CreatePayment"), None)
    tpcb = next((row for row in rows if row["operation"] == "pgbench TPC-B"), None)
    return {
        "CreatePayment / pgbench TPC-B (target ≥ 1.0)": ratio("CreatePayment", "pgbench TPC-B"),
        "Health Tender / Health gRPC C++ (target ≥ 0.5)": ratio("Health/Check (Tender)", "Health/Check (gRPC C++)"),
        "GetPayment / Health Tender, both under h2load (target ≥ 0.5)":
            ratio("GetPayment (h2load)", "Health/Check (Tender)"),
        "GetPayment under tender-load / Health Tender under h2load": ratio("GetPayment", "Health/Check (Tender)"),
        "PostgreSQL CPU per payment / per TPC-B transaction (target ≤ 1.0)":
            round(create["cpu_us_per_op"]["postgres"] / tpcb["cpu_us_per_op"]["postgres"], 3)
            if create and tpcb and tpcb["cpu_us_per_op"]["postgres"] else None,
        "Tender CPU per payment, µs (target ≤ 300)": create["cpu_us_per_op"]["tender"] if create else None,
        # Over the most connections measured, where the fixed costs weigh least.
        "Tender RSS per idle TLS connection, bytes (target ≤ 30,000)":
            max(memory.get("idle_connections", [{}]), key=lambda row: row.get("connections", 0)).get(
                "bytes_per_connection"),
        "ListPayments p99, most stored / fewest stored (target ≤ 1.2)": scale_ratio(rows, "ListPayments"),
        "ListPayments[failed] p99, most stored / fewest stored": scale_ratio(rows, "ListPayments[failed]"),
        "GetPayment p99, most stored / fewest stored": scale_ratio(rows, "GetPayment"),
    }


def markdown(result):
    lines = [f"Run {result['started']} on {result['machine']['cores']} cores ({result['machine']['cpu']}), "
             f"{result['machine']['memory_gib']} GiB, Linux {result['machine']['kernel']}; "
             f"{result['machine']['swift']}; PostgreSQL {result['machine']['postgresql']} "
             f"(fsync={result['machine']['fsync']}, synchronous_commit={result['machine']['synchronous_commit']}, "
             f"shared_buffers={result['machine']['shared_buffers']}). Every process on the same machine.", ""]
    processes = ["tender", "postgres", "redis", "simulator", "load driver", "gRPC C++"]
    lines.append("| Operation | Callers | OK/s | p50 ms | p90 ms | p99 ms | p99.9 ms | Failed | "
                 + " | ".join(f"CPU µs/op {name}" for name in processes)
                 + " | Commits/op | Rows/op | HOT upd/op | WAL B/op |")
    lines.append("|" + "---|" * (8 + len(processes) + 4))
    for row in result["rows"]:
        cpu = row["cpu_us_per_op"]
        pg = row.get("postgres_per_op") or {}
        def cell(value):
            return "–" if value is None else f"{value:,}"
        lines.append(
            f"| {row['operation']} | {row['callers']} | {row['throughput']:,} | {row['p50_ms']} | {row['p90_ms']} | "
            f"{row['p99_ms']} | {row['p99.9_ms']} | {row['failed']} | "
            + " | ".join(cell(cpu.get(name)) for name in processes)
            + f" | {cell(pg.get('commits_per_op'))} | {cell(pg.get('rows_per_op'))} | "
              f"{cell(pg.get('hot_updates_per_op'))} | {cell(pg.get('wal_bytes_per_op'))} |")
    memory = result.get("memory") or {}
    if memory:
        lines += ["", "| Tender's memory | RSS MiB | Bytes per connection over idle |", "|---|---|---|"]
        for row in memory.get("idle_connections", []):
            what = "idle" if row["connections"] == 0 else f"{row['connections']:,} idle TLS connections"
            per_connection = row["bytes_per_connection"]
            lines.append(f"| {what} | {row['rss_kib'] / 1024:.1f} | "
                         f"{'–' if per_connection is None else f'{per_connection:,}'} |")
        if "after_load_rss_kib" in memory:
            lines.append(f"| after the load phases (Health, payment RPCs) | {memory['after_load_rss_kib'] / 1024:.1f} | – |")
    if result.get("scale"):
        lines += ["", "| Payments stored | Loaded in s | VACUUM ANALYZE + CHECKPOINT s | Table + indexes MiB |",
                  "|---|---|---|---|"]
        for step in result["scale"]:
            lines.append(f"| {step['stored']:,} | {step['copy_s']} | {step['vacuum_analyze_checkpoint_s']} | "
                         f"{step['payments_bytes'] / 1048576:,.1f} |")
    lines += ["", "| Ratio | Value |", "|---|---|"]
    lines += [f"| {name} | {'–' if value is None else value} |" for name, value in result["ratios"].items()]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", type=pathlib.Path, default=ROOT / ".build" / "release")
    parser.add_argument("--reference", type=pathlib.Path, required=True, help="gRPC C++ health_server binary")
    parser.add_argument("--clients", type=int, default=64, help="tender-load callers and pgbench clients")
    parser.add_argument("--connections", type=int, default=16, help="h2load connections")
    parser.add_argument("--streams", type=int, default=32, help="h2load streams per connection")
    parser.add_argument("--duration", type=int, default=20, help="seconds measured per phase")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per phase")
    parser.add_argument("--json", type=pathlib.Path, help="write the figures here as JSON too")
    parser.add_argument("--markdown", type=pathlib.Path, help="write the Markdown table here too")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs) afterwards")
    parser.add_argument("--idle-connections", type=int, nargs="+", default=[1000, 10000],
                        help="idle TLS connections held open in the memory phase, one measurement per count")
    parser.add_argument("--scale-rows", type=int, nargs="+", default=[10_000, 10_000_000],
                        help="payments stored in the scale phase, one measurement per count")
    parser.add_argument("--scale-clients", type=int, default=8, help="tender-load callers in the scale phase")
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=PHASES,
                        help="run only these phases (all by default)")
    parser.add_argument("--perf", action="store_true",
                        help="record every process with perf during each measured h2load and tender-load phase (keeps the work folder)")
    settings = parser.parse_args()
    # Room for the memory phase's connections, in this process and in the servers it starts.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(settings.idle_connections) + 1000
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    os.environ["TENDER_BIN"] = str(settings.bin / "tender")

    work = cluster.workspace("tender-bench-")
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    backends = cluster.Backends(work, API_KEY, postgres_settings=Database.SETTINGS)
    database = Database(backends.postgres)
    others = []
    try:
        backends.start()
        database.started()
        merchant = "mer_bench"
        backends.admin("merchant", "create", "--id", merchant, "--name", "Benchmark")
        client_id, secret = backends.create_client(merchant)
        client = work / "client.json"
        client.write_text(json.dumps({"clientID": client_id, "clientSecret": secret}))
        def serve(environment=backends.environment):
            grpc_port, http_port = cluster.free_port(), cluster.free_port()
            process = cluster.Process("tender", work, [
                str(settings.bin / "tender"), "serve", "--grpc-address", f"127.0.0.1:{grpc_port}",
                "--http-address", f"127.0.0.1:{http_port}", "--tls-cert", str(work / "server.pem"),
                "--tls-key", str(work / "server-key.pem"), "--rate-limit", "1000000/s,burst=1000000",
                "--log-level", "warning"], environment)
            process.start()
            others.append(process)
            cluster.wait_for(lambda: cluster.accepting(grpc_port), 60, "tender serve listening")
            process.http_port = http_port
            return process, grpc_port

        memory = {}
        if "memory" in settings.phases:
            # A server of its own, stopped afterwards: the memory the connections leave in the
            # allocator's arenas then changes no later reading.
            print("== memory: idle TLS connections", flush=True)
            fresh, port = serve()
            memory["idle_connections"] = idle_connections(settings, work, port, fresh.process.pid)
            fresh.process.send_signal(2)
            fresh.process.wait(timeout=60)

        tender, grpc_port = serve()

        watched = Watched()
        watched.add("tender", tender.process.pid)
        watched.add("postgres", database.postmaster, tree=True)
        watched.add("redis", backends.redis.process.pid)
        watched.add("simulator", backends.simulator.process.pid)

        rows = []
        if "health" in settings.phases:
            print("== Health/Check over TLS, h2load", flush=True)
            rows.append(h2load(settings, work, f"https://127.0.0.1:{grpc_port}/grpc.health.v1.Health/Check",
                               "Tender", watched))
        if "reference" in settings.phases:
            reference_port = cluster.free_port()
            reference = cluster.Process("health-server", work, [
                str(settings.reference), f"127.0.0.1:{reference_port}", str(work / "server.pem"),
                str(work / "server-key.pem")])
            reference.start()
            others.append(reference)
            cluster.wait_for(lambda: cluster.accepting(reference_port), 30, "the gRPC C++ server listening")
            watched.add("gRPC C++", reference.process.pid)
            rows.append(h2load(settings, work, f"https://127.0.0.1:{reference_port}/grpc.health.v1.Health/Check",
                               "gRPC C++", watched))
            del watched.pids["gRPC C++"]
            reference.process.kill()
            reference.process.wait()

        if "get-h2load" in settings.phases:
            print("== GetPayment over TLS, h2load", flush=True)
            rows.append(get_payment_h2load(settings, work, grpc_port, tender.http_port, client, watched))
        if any(phase in RPCS for phase in settings.phases):
            print("== payment RPCs, tender-load", flush=True)
            rows += tender_load(settings, work, f"127.0.0.1:{grpc_port}", work / "ca.pem", client, watched, database,
                                [phase for phase in settings.phases if phase in RPCS])
            memory["after_load_rss_kib"] = rss_kib(tender.process.pid)
        tender.process.send_signal(2)
        tender.process.wait(timeout=60)

        if "pgbench" in settings.phases:
            print("== pgbench TPC-B", flush=True)
            rows.append(pgbench(settings, work, database, watched))

        scaled = []
        if "scale" in settings.phases:
            scale_rows, scaled = scale(settings, work, backends, database, serve)
            rows += scale_rows

        result = {"started": started, "machine": machine(database), "settings": {
            "clients": settings.clients, "h2load": f"{settings.connections} connections x {settings.streams} streams",
            "duration_s": settings.duration, "warmup_s": settings.warmup}, "rows": rows, "memory": memory,
            "scale": scaled}
        result["ratios"] = ratios(rows, memory)
        table = markdown(result)
        print()
        print(table)
        if settings.markdown:
            settings.markdown.write_text(table + "\n")
        if settings.json:
            settings.json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
            print(f"\nJSON: {settings.json}")
    finally:
        backends.stop(*others)
        if settings.keep or settings.perf:
            print(f"work folder: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
