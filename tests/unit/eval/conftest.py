"""The local MMAU test-mini metadata (1000 items), skipped where the shared folder is absent."""

from __future__ import annotations

import pytest

from alarm.eval.benchmarks import Item, load_items
from tests.unit.eval.helpers import MMAU_MINI


@pytest.fixture(scope="session")
def mmau_items() -> list[Item]:
    if not MMAU_MINI.exists():
        pytest.skip(f"{MMAU_MINI} not present (shared benchmark metadata, see ../shared/ext/benchmarks)")
    return load_items("mmau", [MMAU_MINI])
