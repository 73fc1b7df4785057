"""The card-data scanner finds what it must (so a clean scan means something) and nothing else."""
import json
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "support"))
import card_scan  # noqa: E402

CARD_NUMBERS = [
    "4242424242424242",
    "paid with 4242 4242 4242 4242 thanks",
    "4000-0566-5566-5556",
    "order 12 4111111111111111",
    "٤٢٤٢٤٢٤٢٤٢٤٢٤٢٤٢",
    "4242\u200b4242\u200b4242\u200b4242",
    "378282246310005",
    '{"description":"5555555555554444"}',
]
NOT_CARD_NUMBERS = [
    "4242424242424241",  # fails Luhn
    "2026-12-02T17:40:12.123456+00:00",
    "trace 4bf92f3577b34da6a3ce929d0e0e4736",
    "pay_4242424242424242x",  # part of an identifier, not standing apart
    "1234",
    "amount 123456789012",
    # A UUID whose first three groups are 16 digits that pass the Luhn check.
    "74659740-0608-4254-bff0-63b75dfb8a11",
    "idempotency_key=74659740-0608-4254-bff0-63b75dfb8a11",
]


@pytest.mark.parametrize("text", CARD_NUMBERS)
def test_finds_card_numbers(text):
    assert card_scan.contains_card_number(text)


@pytest.mark.parametrize("text", NOT_CARD_NUMBERS)
def test_ignores_other_numbers(text):
    assert not card_scan.contains_card_number(text)


def test_scan_reports_rows_bytea_and_log_lines(tmp_path):
    stored = b"\x0a\x10" + b"4111111111111111" + b"\x12\x02ok"
    rows = [
        {"table": "t.public.payments", "bytea": ["response"], "row": {"description": "fine", "response": "\\x" + stored.hex()}},
        {"table": "t.public.payments", "bytea": [], "row": {"metadata": {"note": "5555 5555 5555 4444"}}},
        {"table": "t.public.payments", "bytea": [], "row": {"description": "clean", "amount": 4242424242424242}},
    ]
    (tmp_path / "a.rows").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "b.log").write_text("ok\nrefused 4242 4242 4242 4242\n")
    assert card_scan.scan(tmp_path) == 1
    (tmp_path / "a.rows").write_text(json.dumps(rows[2]) + "\n")
    (tmp_path / "b.log").write_text("ok\n")
    assert card_scan.scan(tmp_path) == 0


def test_swift_output_is_read_for_log_records_only(tmp_path):
    (tmp_path / "swift-test.log").write_text(
        '◇ Test case passing 1 argument text → "4242424242424242" started.\n'
        "2026-12-02T17:46:03+0000 info tender.test : fine\n")
    assert card_scan.scan(tmp_path) == 0
    (tmp_path / "swift-test.log").write_text("2026-12-02T17:46:03+0000 error tender.test : card 4242424242424242\n")
    assert card_scan.scan(tmp_path) == 1
