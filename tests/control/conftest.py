"""Fixtures of the controller's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cutover.store import Store, open_store


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """The store of ``store_url`` (SQLite, and PostgreSQL when it runs), closed afterwards."""
    opened = open_store(store_url)
    yield opened
    opened.close()
