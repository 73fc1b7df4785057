import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "support"))

from tender_dev import tender_dev  # noqa: E402


@pytest.fixture(scope="module")
def cli_server():
    # Each command issues its own token: dozens of commands in seconds are more than IssueToken's
    # per-address default (10, then one every 2 s) lets through.
    with tender_dev(arguments=["--issue-token-rate-limit", "100/s,burst=200"]) as running:
        yield running
