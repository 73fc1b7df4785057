"""A Tender server of its own for the hostile-input suite, so what it measures (RSS, CPU) is this
suite's doing alone."""
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "support"))
sys.path.insert(0, str(ROOT / "clients" / "python"))

from tender_dev import tender_dev  # noqa: E402


@pytest.fixture(scope="module")
def hostile_server():
    with tender_dev() as server:
        yield server
