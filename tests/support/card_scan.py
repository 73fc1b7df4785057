#!/usr/bin/env python3
"""The card-data scan: after the test suites, every log line they kept, every database row and
every stored response must be free of payment card numbers.

    card_scan.py dump --port PORT --out DIR [--label NAME]   rows of every database of a cluster
    card_scan.py scan DIR                                      scans DIR, exits 1 on any finding

The test harnesses put their material in $TENDER_CARD_SCAN_DIR: `tender dev` logs (at info) and
row dumps from the Python suites (tests/support/tender_dev.py), the Swift test run's output, and
one `postgres-*.cluster` file per Swift test process naming its throwaway cluster, which `scan`
dumps, stops and removes first. Of the Swift run's output only the log records are read: the rest
is the test runner's report, whose test arguments include the card numbers the tests send.

A card number here is a run of 13–19 digits (any script's decimal digits; digit groups joined by
single spaces or dashes, as cards are written) standing apart from letters and other digits, that
passes the Luhn check; canonical UUIDs are not read for digits. Database rows are read as JSON; text and JSON strings are scanned, bytea
values (stored responses, request fingerprints) as the printable text inside them. Findings are
reported by place, never with the digits.
"""
import argparse
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
import unicodedata

# A UUID is a random identifier whatever digits it holds (about one in a hundred has digit groups
# that pass the Luhn check); Tender accepts UUID idempotency keys for that reason, and so does the scan.
UUID = re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?![0-9A-Za-z])")
GROUPED = re.compile(r"(?<![0-9A-Za-z])[0-9]+(?:[ -][0-9]+)*(?![0-9A-Za-z])")
PRINTABLE = re.compile(rb"[\x20-\x7e]{13,}")
# A swift-log record in the Swift test run's output, which also holds the test runner's own report
# (test names and arguments, some of them card numbers the tests feed Tender).
LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\dT\S+ (trace|debug|info|notice|warning|error|critical) ")


def normalise(text: str) -> str:
    """Unicode decimal digits as ASCII digits; marks and format characters between them dropped."""
    if text.isascii():
        return text
    out = []
    for char in text:
        if char.isdecimal() and not char.isascii():
            out.append(str(unicodedata.decimal(char)))
        elif unicodedata.category(char) in ("Mn", "Me", "Mc", "Cf"):
            continue
        else:
            out.append(char)
    return "".join(out)


def luhn(digits: str) -> bool:
    total = 0
    for offset, char in enumerate(reversed(digits)):
        value = int(char)
        if offset % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def contains_card_number(text: str) -> bool:
    text = UUID.sub(" ", normalise(text))
    for match in GROUPED.finditer(text):
        groups = re.split(r"[ -]", match.group(0))
        if sum(len(g) for g in groups) < 13:
            continue
        for start in range(len(groups)):
            digits = ""
            for group in groups[start:]:
                digits += group
                if len(digits) > 19:
                    break
                if len(digits) >= 13 and luhn(digits):
                    return True
    return False


def strings_of(value):
    """Every string inside a JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings_of(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_of(item)


def psql(port: int, database: str, sql: str) -> str:
    return subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", database, "-XAtq", "-c", sql],
        check=True, capture_output=True, text=True).stdout


def dump(port: int, out: pathlib.Path, label: str) -> int:
    """Writes every row of every table of every database as JSON lines; returns the row count."""
    out.mkdir(parents=True, exist_ok=True)
    databases = psql(port, "postgres", "SELECT datname FROM pg_database WHERE NOT datistemplate").split()
    rows = 0
    for database in databases:
        tables = psql(port, database,
                      "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM information_schema.tables "
                      "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')"
                      ).split()
        bytea = set(psql(port, database,
                         "SELECT column_name FROM information_schema.columns WHERE data_type = 'bytea'").split())
        with open(out / f"{label}-{database}.rows", "w") as sink:
            for table in tables:
                for line in psql(port, database, f"SELECT row_to_json(t) FROM {table} t").splitlines():
                    if line:
                        sink.write(json.dumps({"table": f"{database}.{table}", "bytea": sorted(bytea),
                                               "row": json.loads(line)}) + "\n")
                        rows += 1
    return rows


def stop_cluster(port: int, directory: pathlib.Path) -> None:
    pid_file = directory / "data" / "postmaster.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text().split()[0])
        try:
            os.kill(pid, signal.SIGINT)
            for _ in range(1200):
                os.kill(pid, 0)
                time.sleep(0.025)
        except ProcessLookupError:
            pass
    shutil.rmtree(directory, ignore_errors=True)


def scan(directory: pathlib.Path) -> int:
    for cluster in sorted(directory.glob("postgres-*.cluster")):
        port, path = cluster.read_text().split("\t", 1)
        rows = dump(int(port), directory, cluster.stem)
        print(f"card scan: dumped {rows} rows of the Swift tests' cluster {cluster.stem}", file=sys.stderr)
        stop_cluster(int(port), pathlib.Path(path.strip()))
        cluster.unlink()
    findings = []
    files = lines = rows = strings = 0
    for path in sorted(directory.iterdir()):
        if path.suffix == ".rows":
            files += 1
            for number, line in enumerate(path.open(encoding="utf-8"), 1):
                record = json.loads(line)
                rows += 1
                bytea = set(record["bytea"])
                for column, value in record["row"].items():
                    if column in bytea and isinstance(value, str) and value.startswith("\\x"):
                        texts = [m.decode("ascii") for m in PRINTABLE.findall(bytes.fromhex(value[2:]))]
                        # Protobuf strings in stored responses, and the UTF-8 text of other bytes.
                        texts.append(bytes.fromhex(value[2:]).decode("utf-8", "replace"))
                    else:
                        texts = list(strings_of(value))
                    for text in texts:
                        strings += 1
                        if contains_card_number(text):
                            findings.append(f"{path.name}:{number}: {record['table']}.{column}")
        elif path.suffix in (".log", ".out"):
            files += 1
            mixed = path.name.startswith("swift-test")
            for number, line in enumerate(path.open(encoding="utf-8", errors="replace"), 1):
                if mixed and not LOG_RECORD.match(line):
                    continue
                lines += 1
                if contains_card_number(line):
                    findings.append(f"{path.name}:{number}")
    print(f"card scan: {files} files, {lines} log lines, {rows} database rows ({strings} strings): "
          f"{len(findings)} card numbers", file=sys.stderr)
    for finding in findings[:50]:
        print(f"card scan: card number at {finding}", file=sys.stderr)
    return 1 if findings else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    dumping = commands.add_parser("dump")
    dumping.add_argument("--port", type=int, required=True)
    dumping.add_argument("--out", type=pathlib.Path, required=True)
    dumping.add_argument("--label", default="cluster")
    scanning = commands.add_parser("scan")
    scanning.add_argument("directory", type=pathlib.Path)
    arguments = parser.parse_args()
    if arguments.command == "dump":
        print(f"card scan: dumped {dump(arguments.port, arguments.out, arguments.label)} rows", file=sys.stderr)
        return 0
    return scan(arguments.directory)


if __name__ == "__main__":
    sys.exit(main())
