"""Duplicate runs (same ``nnexp.run_key``; legacy runs: same old ``nnexp.config_hash``) count once in a report.

A single run repeats a sweep's run (single runs never resume), and two identical
sweeps started at once train every configuration twice: counted as extra seeds,
such copies inflate ``n`` and shrink the standard deviation.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from conftest import migrated_store, run_cli
from nnexp.report import build_report
from nnexp.report.__main__ import main as report_main
from nnexp.report.load import drop_duplicates

EPOCHS = 3
T0 = 1_700_000_000_000  # ms: start of the first run; every later run starts and ends later


def _curve(final: float) -> list[float]:
    """val_loss per epoch 1..EPOCHS, falling by 0.1 per epoch to ``final``."""
    return [final + 0.1 * (EPOCHS - s) for s in range(1, EPOCHS + 1)]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Sweep A: relu and tanh × seeds 0-2. A single run repeating tanh seed 0 (final 0.22 instead of 0.20, so
    the kept copy shows). Sweep B, run alongside A: relu seeds 0-2 again (bit-identical), plus a FAILED copy of
    relu seed 1 that ended last of all."""
    from mlflow.entities import Metric, Param

    from nnexp import tracking

    root = tmp_path_factory.mktemp("dedup")
    uri = migrated_store(tmp_path_factory, root)
    c, exp_id = tracking.prepare_store(uri, "dedup")
    clock = iter(range(T0, T0 + 10**9, 1000))

    def sweep(name):
        rid = c.create_run(exp_id, run_name=name, start_time=next(clock),
                           tags={"nnexp.kind": "sweep", "nnexp.sweep": name}).info.run_id
        return rid

    def run(act, seed, final, parent=None, status="FINISHED"):
        tags = {"activation": act, "init": "auto", "dataset": "moons", "nnexp.config_hash": f"{act}{seed}",
                "nnexp.outcome": "finished" if status == "FINISHED" else "failed"}
        if parent:
            tags["mlflow.parentRunId"] = parent
        rid = c.create_run(exp_id, run_name=f"{act}-s{seed}", start_time=next(clock), tags=tags).info.run_id
        params = {"activation.name": act, "optimizer.lr": 0.1, "dataset.name": "moons", "seed": seed, "epochs": EPOCHS}
        vals = _curve(final) if status == "FINISHED" else []
        c.log_batch(rid, metrics=[Metric("val_loss", v, 0, s) for s, v in enumerate(vals, start=1)],
                    params=[Param(k, str(v)) for k, v in params.items()])
        c.set_terminated(rid, status, end_time=next(clock))
        return rid

    a, b = sweep("sweep-a"), sweep("sweep-b")
    ids = {}
    for seed, (r, t) in enumerate(zip([0.10, 0.12, 0.14], [0.20, 0.25, 0.30])):
        ids["a", "relu", seed] = run("relu", seed, r, a)
        ids["a", "tanh", seed] = run("tanh", seed, t, a)
    ids["single", "tanh", 0] = run("tanh", 0, 0.22)
    for seed, r in enumerate([0.10, 0.12, 0.14]):
        ids["b", "relu", seed] = run("relu", seed, r, b)
    ids["b", "relu", "failed"] = run("relu", 1, math.nan, b, status="FAILED")
    return {"uri": uri, "root": root, "ids": ids, "sweeps": (a, b)}


def _summary(out) -> pd.DataFrame:
    return pd.read_csv(out / "summary.csv").set_index("activation")


def test_whole_experiment_counts_each_seed_once(store):
    out = store["root"] / "all"
    text = build_report(store["uri"], "dedup", out_dir=out, boundaries=False).read_text()
    t = _summary(out)
    assert t.loc["tanh", "seeds"] == 3 and t.loc["relu", "seeds"] == 3  # 4 and 6 without de-duplication
    tanh = [0.22, 0.25, 0.30]  # seed 0 from the single run: it ended after sweep A's copy
    assert t.loc["tanh", "val_loss mean"] == pytest.approx(0.77 / 3)
    assert t.loc["tanh", "val_loss std"] == pytest.approx(np.std(tanh, ddof=1))
    assert t.loc["tanh", "val_loss std"] == pytest.approx(0.07 / math.sqrt(3))  # sqrt((0.0367² + 0.0067² + 0.0433²) / 2)
    assert t.loc["relu", "val_loss mean"] == pytest.approx(0.12)
    assert t.loc["relu", "val_loss std"] == pytest.approx(0.02)  # 0.0179 if the identical copies counted
    assert t.loc["relu", "diverged"] == 0
    curves = pd.read_csv(out / "curves.csv")
    last = curves[(curves["metric"] == "val_loss") & (curves["step"] == EPOCHS)].set_index("activation")
    assert last.loc["tanh", "n"] == 3 and last.loc["tanh", "mean"] == pytest.approx(0.77 / 3)
    assert "3 vs 3 seeds" in text and "2 configurations of activation, 3 seeds each" in text
    assert "6 runs (6 finished" in text and "<b>4 duplicate runs dropped</b>" in text
    assert "<b>1 unfinished run dropped</b>: it was killed or failed" in text  # the FAILED copy

    ids = store["ids"]
    dup = pd.read_csv(out / "duplicates.csv").set_index("run_id")["kept_run_id"].to_dict()
    assert dup == {
        ids["a", "tanh", 0]: ids["single", "tanh", 0],  # the most recent end time wins
        **{ids["a", "relu", s]: ids["b", "relu", s] for s in range(3)},
        ids["b", "relu", "failed"]: ids["b", "relu", 1],  # FINISHED beats a FAILED copy that ended later
    }
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 6 and not set(runs["run_id"]) & set(dup)
    assert "failed" not in set(runs["outcome"])  # the dropped FAILED copy is not listed as a failed run either


def test_one_sweep_without_duplicates_is_unaffected(store):
    out = store["root"] / "sweep-a"
    text = build_report(store["uri"], "dedup", parent_id=store["sweeps"][0], out_dir=out, boundaries=False).read_text()
    t = _summary(out)
    assert t.loc["tanh", "seeds"] == 3 and t.loc["tanh", "val_loss mean"] == pytest.approx(0.25)
    assert t.loc["tanh", "val_loss std"] == pytest.approx(0.05)
    assert t.loc["relu", "val_loss mean"] == pytest.approx(0.12) and t.loc["relu", "val_loss std"] == pytest.approx(0.02)
    assert "duplicate" not in text and not (out / "duplicates.csv").exists()


def test_duplicates_within_one_sweep_are_dropped(store):
    out = store["root"] / "sweep-b"
    text = build_report(store["uri"], "dedup", parent_id=store["sweeps"][1], out_dir=out, boundaries=False).read_text()
    t = _summary(out)
    assert list(t.index) == ["relu"] and t.loc["relu", "seeds"] == 3 and t.loc["relu", "diverged"] == 0
    assert t.loc["relu", "val_loss std"] == pytest.approx(0.02)
    # a FAILED copy is an unfinished attempt, not a duplicate (said of a killed run too; found by the new-user test)
    assert "<b>1 unfinished run dropped</b>: it was killed or failed" in text and "duplicate run" not in text
    assert "None: every selected run finished" in text
    assert list(pd.read_csv(out / "duplicates.csv")["run_id"]) == [store["ids"]["b", "relu", "failed"]]


def test_cli_says_how_many_were_dropped(store, capsys):
    out = store["root"] / "cli"
    args = ["--uri", store["uri"], "--experiment", "dedup", "--out", str(out), "--no-boundaries"]
    assert report_main([*args, "--filter", "tags.activation = 'tanh'"]) == 0
    cap = capsys.readouterr()
    assert cap.out.splitlines()[0] == str(out / "index.html")  # then the `mlflow ui` command for the links
    assert f"nnexp.report: 1 duplicate run dropped (same nnexp.run_key as a kept run, counted once): " \
           f"{out / 'duplicates.csv'}" in cap.err
    assert _summary(out).loc["tanh", "seeds"] == 3
    # the same folder rebuilt for a selection without duplicates: no stale duplicates.csv, no line
    assert report_main([*args, "--sweep", "sweep-a"]) == 0
    assert "duplicate" not in capsys.readouterr().err and not (out / "duplicates.csv").exists()


def _frame(rows) -> pd.DataFrame:
    cols = ["run_id", "run_key", "status", "start_time", "end_time", "val_loss"]
    df = pd.DataFrame(rows, columns=cols)
    df.attrs["metrics"] = ["val_loss"]
    return df


def test_drop_duplicates_preference_order():
    runs = _frame([
        ("r1", "h1", "FINISHED", 1, 10, 0.1),
        ("r2", "h1", "FAILED", 2, 50, math.nan),     # ended last, but not FINISHED
        ("r3", "h1", "FINISHED", 3, 20, 0.1),        # FINISHED and ended last of the FINISHED: kept
        ("r4", "h2", "RUNNING", 4, None, math.nan),  # still running: no end time, loses
        ("r5", "h2", "FINISHED", 1, 5, 0.2),
        ("r7", "h3", "FINISHED", 1, 5, 0.3),         # same times: the smaller run_id is kept
        ("r6", "h3", "FINISHED", 1, 5, 0.3),
        ("r8", "h4", "KILLED", 1, 5, math.nan),      # only copy of h4: kept whatever its status
    ])
    kept, dropped = drop_duplicates(runs)
    assert list(kept["run_id"]) == ["r3", "r5", "r6", "r8"]  # original order
    assert dict(zip(dropped["run_id"], dropped["kept_run_id"])) == {"r1": "r3", "r2": "r3", "r4": "r5", "r7": "r6"}
    assert kept.attrs["metrics"] == ["val_loss"]


def test_drop_duplicates_keeps_untagged_runs():
    runs = _frame([
        ("r1", None, "FINISHED", 1, 10, 0.1),
        ("r2", None, "FINISHED", 1, 10, 0.1),
        ("r3", "", "FINISHED", 1, 10, 0.1),
        ("r4", "h", "FINISHED", 1, 10, 0.1),
    ])
    kept, dropped = drop_duplicates(runs)
    assert list(kept["run_id"]) == ["r1", "r2", "r3", "r4"] and dropped.empty and "kept_run_id" in dropped
    kept, dropped = drop_duplicates(runs.drop(columns="run_key"))  # no key column at all
    assert len(kept) == 4 and dropped.empty


@pytest.mark.slow
def test_single_run_after_a_sweep_end_to_end(tmp_path):
    """The tester's reproduction, small: the whole-experiment report equals the sweep's own.

    The single run's copy is bit-identical to the sweep's; only the order of summation differs (rtol 1e-12).
    """
    common = ["dataset=moons", f"epochs={EPOCHS}", "model.hidden_sizes=[4]", "tracking.progress=false"]
    proc = run_cli(["-m", "activation=tanh,relu", *common], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli(["activation=tanh", *common], tmp_path)  # tanh seed 0 again: the sweep ran seeds 0, 1, 2
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli(["--experiment", "activations", "--no-boundaries"], tmp_path, module="nnexp.report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "nnexp.report: 1 duplicate run dropped" in proc.stderr
    sweep_out = next(p for p in (tmp_path / "reports" / "activations").iterdir() if p.name != "all")
    cols = ["seeds", "val_loss mean", "val_loss std", "test_accuracy mean", "test_accuracy std"]
    mine, swept = _summary(tmp_path / "reports" / "activations" / "all"), _summary(sweep_out)
    assert list(mine["seeds"]) == [3, 3]
    pd.testing.assert_frame_equal(mine[cols].sort_index(), swept[cols].sort_index(), check_exact=False, rtol=1e-12)
