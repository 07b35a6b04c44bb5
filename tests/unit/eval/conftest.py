"""The MMAU test-mini metadata (1000 items), skipped where the file is absent (see helpers.MMAU_MINI)."""

from __future__ import annotations

import pytest

from alarm.eval.benchmarks import Item, load_items
from tests.unit.eval.helpers import MMAU_MINI


@pytest.fixture(scope="session")
def mmau_items() -> list[Item]:
    if not MMAU_MINI.exists():
        pytest.skip(f"{MMAU_MINI} not present: set ALARM_MMAU_TEST_MINI to mmau-test-mini.json of "
                    "github.com/Sakshi113/MMAU")
    return load_items("mmau", [MMAU_MINI])
