"""The report build's garbage-collector handling (:func:`nnexp.report.build._frozen_heap`) and the logged metric
names passed to :func:`nnexp.report.sections.fixed_keys` instead of read from the frame's ``attrs``."""

from __future__ import annotations

import gc
import weakref

import pandas as pd
import pytest

from nnexp.report.build import _frozen_heap
from nnexp.report.sections import fixed_keys


class _Node:
    pass


def _cycle() -> weakref.ref:
    a, b = _Node(), _Node()
    a.other, b.other = b, a  # freed by the cyclic collector only
    return weakref.ref(a)


@pytest.fixture(autouse=True)
def nothing_frozen():
    """Each test starts with no object frozen: an earlier test in this worker that ran a sweep in-process left the
    launcher's freeze in place (as the command does until it exits)."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_frozen_heap_freezes_older_objects_and_frees_its_own_cycles():
    gc.collect()
    with _frozen_heap():
        assert gc.get_freeze_count() > 1000  # the imported modules' objects, at least
        inner = _cycle()
        assert inner() is not None
    assert inner() is None  # the block's cyclic garbage is collected on leaving
    assert gc.get_freeze_count() == 0  # and every older object is the collector's again


def test_frozen_heap_unfreezes_when_the_build_fails():
    with pytest.raises(RuntimeError):
        with _frozen_heap():
            raise RuntimeError("boom")
    assert gc.get_freeze_count() == 0


def test_fixed_keys_with_metric_names_matches_the_attrs_path():
    runs = pd.DataFrame({"activation": ["relu", "tanh"], "epochs": [5, 5], "batch_size": [None, None],
                         "val_loss": [0.1, 0.1], "optimizer.lr": [0.1, 0.2], "run_id": ["a", "b"]})
    runs.attrs["metrics"] = ["val_loss"]
    expected = {"batch_size": None, "epochs": 5}
    assert fixed_keys(runs, ["activation", "optimizer.lr"]) == expected
    plain = runs.copy()
    plain.attrs = {}
    assert fixed_keys(plain, ["activation", "optimizer.lr"], ["val_loss"]) == expected
    assert "val_loss" in fixed_keys(plain, ["activation", "optimizer.lr"])  # without the names: taken for a key


def test_frozen_heap_leaves_a_callers_own_freeze_alone():
    gc.freeze()  # as the sweep's report worker does after its imports
    try:
        frozen = gc.get_freeze_count()
        with _frozen_heap():
            assert abs(gc.get_freeze_count() - frozen) < 100  # not frozen again (a few frozen objects may die)
        assert gc.get_freeze_count() > frozen - 100  # and not unfrozen
    finally:
        gc.unfreeze()
