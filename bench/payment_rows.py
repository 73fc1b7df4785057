#!/usr/bin/env python3
"""Stored payments in bulk, for measuring reads at scale: rows of Tender's `payments` table written
with COPY, as many as asked for, for one merchant.

Row `i` is the same on every run: its payment id is a keyed hash of `i` (random order in the
primary key, as Tender's own random ids), its create time grows with `i` (oldest first, spread
over the year before 2026-12-01 whatever the row count). Of each 100 payments 90 succeeded (5 of them half refunded), 5 failed (card
declined), 5 were canceled before capture; none is processing or awaiting capture, so no worker of
Tender's ever picks one up. A third carry a customer reference (1 of 100,000 customers), a quarter
metadata and a description.

    python3 bench/payment_rows.py --database-url postgres://…/tender --merchant mer_scale --rows 10000000

loads rows 0 ..< 10,000,000 (`--first` starts elsewhere, to grow a table in steps) and prints the
ids of `--sample` of them, chosen at random, for a load driver to read.
"""
import argparse
import hashlib
import random
import subprocess
import sys
import time

COLUMNS = ("payment_id, merchant_id, status, capture_method, currency, amount_minor, capturable_minor, "
           "captured_minor, refunded_minor, failure_reason, payment_method, customer_reference, description, "
           "metadata, provider_payment_id, create_time, update_time")
KEY = b"tender-bench-rows"
YEAR_US = 365 * 24 * 3600 * 1_000_000
END_US = 1_796_083_200 * 1_000_000  # 2026-12-01 00:00 UTC
CHUNK = 20_000


def payment_id(index):
    return "pay_" + hashlib.blake2b(index.to_bytes(8, "little"), digest_size=12, key=KEY).hexdigest()


class Rows:
    """Rows `first ..< stop` of `total` (the size the create times are spread for)."""

    def __init__(self, merchant, total):
        self.merchant = merchant
        self.start_us = END_US - YEAR_US
        self.step_us = YEAR_US // max(total, 1)

    def timestamp(self, index):
        seconds, micros = divmod(self.start_us + index * self.step_us, 1_000_000)
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}+00"

    def row(self, index):
        identifier = payment_id(index)
        kind = index % 100
        amount = 100 + (index * 7919) % 99_900
        created = self.timestamp(index)
        reference = f"cus_{(index * 31) % 100_000}" if index % 3 == 0 else ""
        if index % 4 == 0:
            description, metadata = f"Order {index}", f'{{"order": "{index}"}}'
        else:
            description, metadata = "", "{}"
        provider = "\\N" if kind < 5 else "pi_" + identifier[4:]
        if kind < 5:
            status, capture, captured, refunded, failure = "failed", "automatic", 0, 0, "card_declined"
        elif kind < 10:
            status, capture, captured, refunded, failure = "canceled", "manual", 0, 0, "\\N"
        else:
            refunded = amount // 2 if kind < 15 else 0
            status, capture, captured, failure = "succeeded", "automatic", amount, "\\N"
        return "\t".join((identifier, self.merchant, status, capture, "EUR", str(amount), "0", str(captured),
                          str(refunded), failure, "pm_card_visa", reference, description, metadata, provider,
                          created, created)) + "\n"


def copy(database_url, merchant, first, stop, total, progress=None):
    """COPYs rows `first ..< stop` into `payments` in one transaction; seconds taken."""
    rows = Rows(merchant, total)
    began = time.monotonic()
    psql = subprocess.Popen(["psql", database_url, "-Xq", "-v", "ON_ERROR_STOP=1", "-c",
                             f"COPY payments ({COLUMNS}) FROM STDIN"], stdin=subprocess.PIPE, text=True)
    try:
        for start in range(first, stop, CHUNK):
            psql.stdin.write("".join(rows.row(index) for index in range(start, min(start + CHUNK, stop))))
            if progress and (start - first) % 1_000_000 == 0 and start > first:
                progress(start - first, time.monotonic() - began)
        psql.stdin.close()
    finally:
        if psql.wait() != 0:
            raise SystemExit(f"payment_rows: COPY failed (psql exit {psql.returncode})")
    return time.monotonic() - began


def sample(first, stop, count, seed=1):
    """Ids of `count` rows of `first ..< stop`, chosen at random."""
    chooser = random.Random(seed)
    return [payment_id(chooser.randrange(first, stop)) for _ in range(count)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--merchant", required=True, help="an existing merchant's id")
    parser.add_argument("--rows", type=int, required=True, help="load rows up to this index (exclusive)")
    parser.add_argument("--first", type=int, default=0, help="the first row's index")
    parser.add_argument("--total", type=int, help="the size create times are spread for (default: --rows)")
    parser.add_argument("--sample", type=int, default=0, help="print this many ids of rows loaded, one a line")
    settings = parser.parse_args()
    seconds = copy(settings.database_url, settings.merchant, settings.first, settings.rows,
                   settings.total or settings.rows,
                   lambda done, elapsed: print(f"payment_rows: {done:,} rows in {elapsed:.0f} s", file=sys.stderr))
    print(f"payment_rows: {settings.rows - settings.first:,} rows in {seconds:.1f} s", file=sys.stderr)
    for identifier in sample(settings.first, settings.rows, settings.sample):
        print(identifier)


if __name__ == "__main__":
    main()
