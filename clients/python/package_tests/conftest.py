"""The installed package's tests: a real `tender dev` over TLS, and `tender_client` as pip installed
it (clients/python/test-package.sh makes the virtual environment). Only the test helpers of
tests/support are put on the path, never the package's source tree."""
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "support"))

from tender_dev import tender_dev  # noqa: E402


@pytest.fixture(scope="session")
def server():
    with tender_dev() as running:
        yield running
