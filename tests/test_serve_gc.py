"""``notifykit serve`` tunes Python's cyclic collector for a long-lived server with many
connections (docs/performance.md): what start-up allocated is frozen, and collections are
rarer. The library never does it (it is process-wide)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from notifykit import Hub
from notifykit.cli.server import GC_THRESHOLDS, tune_garbage_collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


@pytest.mark.usefixtures("restored_collector")
def test_serve_freezes_start_up_and_collects_less_often() -> None:
    tune_garbage_collector()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() > 0
    assert GC_THRESHOLDS[0] > 700  # Python's default threshold, which the service raises


def test_the_library_leaves_the_collector_alone() -> None:
    before = gc.get_threshold()
    Hub()
    assert gc.get_threshold() == before
