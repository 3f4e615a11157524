"""The sweep report: numbers from a synthetic store with known values, selection errors, and a real sweep's page.

The browser check (headless Chromium driven over the DevTools protocol on a
pipe, no extra Python dependency) is in this module too, so it reuses the one
small real sweep.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli
from nnexp.report import build_report
from nnexp.report.__main__ import main as report_main

T975_2 = 4.302652729911275  # Student t quantile 0.975, 2 degrees of freedom
EPOCHS = 5
FINAL = {"relu": [0.10, 0.12, 0.14], "tanh": [0.20, 0.25, 0.30]}


def _curve(final: float) -> list[float]:
    """val_loss per epoch 1..EPOCHS, falling linearly by 0.1 per epoch to ``final``."""
    return [final + 0.1 * (EPOCHS - s) for s in range(1, EPOCHS + 1)]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """2 activations × 3 seeds with known final val_loss, plus a diverged, a NaN and a failed run."""
    from mlflow.entities import Metric, Param

    from nnexp import tracking

    root = tmp_path_factory.mktemp("synth")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    c, exp_id = tracking.prepare_store(uri, "synth")

    def run(act, seed, vals, outcome="finished", status="FINISHED", exp_id=exp_id, dataset="moons"):
        rid = c.create_run(exp_id, run_name=f"{act}-s{seed}", tags={
            "activation": act, "init": "auto", "dataset": dataset, "nnexp.config_hash": f"{act}{seed}",
            "nnexp.outcome": outcome}).info.run_id
        params = {"activation.name": act, "optimizer.lr": 0.1, "dataset.name": dataset, "seed": seed, "epochs": EPOCHS}
        metrics = [Metric("val_loss", v, 0, s) for s, v in enumerate(vals, start=1)]
        metrics += [Metric("train_loss", v - 0.05, 0, s) for s, v in enumerate(vals, start=1)]
        metrics += [Metric("train_seconds", 1.0 + seed, 0, EPOCHS)]
        c.log_batch(rid, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()])
        c.set_terminated(rid, status)
        return rid

    for act, finals in FINAL.items():
        for seed, f in enumerate(finals):
            run(act, seed, _curve(f))
    nan_id = run("relu", 3, [0.9, 0.5, float("nan")])  # finished, but its final value is not finite
    div_id = run("tanh", 3, [0.9, 50.0], outcome="diverged")
    c.set_tag(div_id, "nnexp.diverged_epoch", "2")  # as the trainer tags a diverged run
    fail_id = run("tanh", 4, [], outcome="failed", status="FAILED")
    # experiment "mixed": 2 activations × 2 seeds on moons, and a lower loss on xor (not comparable)
    _, mixed = tracking.prepare_store(uri, "mixed")
    for act, finals in FINAL.items():
        for seed, f in enumerate(finals[:2]):
            run(act, seed, _curve(f), exp_id=mixed)
    run("tanh", 0, _curve(0.01), exp_id=mixed, dataset="xor")
    out = root / "report"
    index = build_report(uri, "synth", out_dir=out, boundaries=False)
    return {"uri": uri, "root": root, "out": out, "index": index, "ids": (nan_id, div_id, fail_id)}


def test_summary_values_equal_hand_computed(store):
    t = pd.read_csv(store["out"] / "summary.csv").set_index("activation")
    assert list(t.index) == ["relu", "tanh"]  # ranked by mean final val_loss
    for act, finals in FINAL.items():
        m, s = np.mean(finals), np.std(finals, ddof=1)
        assert t.loc[act, "val_loss mean"] == pytest.approx(m)
        assert t.loc[act, "val_loss std"] == pytest.approx(s)
        assert t.loc[act, "val_loss ci_lo"] == pytest.approx(m - T975_2 * s / math.sqrt(3))
        assert t.loc[act, "train_loss mean"] == pytest.approx(m - 0.05)
        assert t.loc[act, "seeds"] == 3
    assert t.loc["relu", "train_seconds mean"] == pytest.approx(2.0)  # seeds 0, 1, 2 (the NaN run is out)
    assert (t.loc["tanh", "diverged"], t.loc["tanh", "divergence rate"]) == (1, pytest.approx(0.25))
    assert t.loc["relu", "diverged"] == 0


def test_epochs_to_default_target(store):
    # target = median of the six finite finals = (0.14 + 0.20) / 2 = 0.17; curves fall 0.1 per epoch
    t = pd.read_csv(store["out"] / "summary.csv").set_index("activation")
    assert t.loc["relu", "reached"] == 3 and t.loc["relu", "epochs mean"] == pytest.approx((5 + 5 + 5) / 3)
    assert t.loc["tanh", "reached"] == 0 and math.isnan(t.loc["tanh", "epochs mean"])
    assert "val_loss ≤ 0.17" in store["index"].read_text()
    build_report(store["uri"], "synth", out_dir=store["root"] / "t", target=0.35, boundaries=False)
    t = pd.read_csv(store["root"] / "t" / "summary.csv").set_index("activation")
    # relu finals 0.10/0.12/0.14 reach 0.35 at epochs 3, 3, 3 (0.30, 0.32, 0.34); tanh 0.20 at 4, 0.25 at 4, 0.30 at 5
    assert t.loc["relu", "epochs mean"] == pytest.approx(3.0)
    assert t.loc["tanh", "epochs mean"] == pytest.approx((4 + 4 + 5) / 3)


def test_comparison_and_conclusion(store):
    from scipy import stats

    c = pd.read_csv(store["out"] / "comparison.csv").set_index("activation")
    p = stats.ttest_ind(FINAL["tanh"], FINAL["relu"], equal_var=False).pvalue
    assert c.loc["tanh", "welch_p"] == pytest.approx(p) and c.loc["tanh", "welch_p_holm"] == pytest.approx(p)
    assert c.loc["tanh", "mwu_p"] == pytest.approx(0.1)
    text = store["index"].read_text()
    assert "Best: relu" in text and f"Welch p = {p:.3f}" in text and "3 vs 3 seeds" in text


def test_speed_sentence_lists_every_activation_with_seeds_reached(store):
    # target 0.17: relu's three seeds reach it at epoch 5, tanh's never
    text = store["index"].read_text()
    assert "relu 5 epochs (3/3 seeds), tanh never (0/3 seeds)." in text
    assert "relu, 5 epochs against tanh never." in text and "fewer than" not in text


def test_lr_sentence_uses_the_best_configuration():
    """Averaged over init, lr = 1 looks best; at relu's best configuration (init a) lr = 0.1 is: say 0.1."""
    from nnexp.report.sections import lr_sentences as _lr_sentences
    from nnexp.report.stats import compare_to_best

    vals = {(0.1, "a"): 0.1, (1.0, "a"): 0.2, (0.1, "b"): 0.9, (1.0, "b"): 0.3}
    ok = pd.DataFrame([{"run_id": f"{lr}{i}{s}", "activation": "relu", "optimizer.lr": lr, "init": i, "seed": s,
                        "outcome": "finished", "val_loss": v + 0.01 * s} for (lr, i), v in vals.items() for s in (0, 1)])
    keys = ["activation", "optimizer.lr", "init"]
    comp = compare_to_best(ok, keys, "val_loss")
    assert comp.loc[0, "config"] == "optimizer.lr=0.1, init=a"
    [text] = _lr_sentences(dict(ok=ok, metric="val_loss", comp=comp, keys=keys, higher=False))
    assert "relu best at lr = 0.1 (final val_loss ranges 0.105–0.205" in text


def test_diverged_failed_and_nonfinite_runs_listed_not_averaged(store):
    runs = pd.read_csv(store["out"] / "runs.csv").set_index("run_id")
    nan_id, div_id, fail_id = store["ids"]
    assert runs.loc[div_id, "outcome"] == "diverged" and runs.loc[fail_id, "outcome"] == "failed"
    text = pd.read_csv(store["out"] / "runs.csv", dtype=str, keep_default_na=False).set_index("run_id")
    # the epoch it diverged at, written as a whole number; blank for every run that did not diverge (it was 0)
    assert text.loc[div_id, "diverged_epoch"] == "2"
    assert set(text.drop(index=div_id)["diverged_epoch"]) == {""}
    section = store["index"].read_text().split("<h2>Diverged and failed runs")[1].split("</section>")[0]
    assert div_id[:8] in section and fail_id[:8] in section and nan_id[:8] in section
    assert "val_loss not finite" in section
    assert ("3 runs did not finish normally; the diverged ones count in the divergence rate; none counts in a mean, "
            "interval or test.") in section  # a failed run is not in the divergence rate
    assert ">null<" not in section  # no error, no diverged epoch: a blank cell, not 'null'
    curves = pd.read_csv(store["out"] / "curves.csv")
    vl = curves[(curves["metric"] == "val_loss") & (curves["activation"] == "tanh")].set_index("step")
    assert vl["mean"].max() < 1.0  # the diverged run's 50.0 never enters
    assert vl.loc[1, "n"] == 3
    relu = curves[(curves["metric"] == "val_loss") & (curves["activation"] == "relu")].set_index("step")
    assert relu.loc[EPOCHS, "n"] == 3 and relu.loc[EPOCHS, "mean"] == pytest.approx(0.12)


def test_mlflow_links(store):
    text = store["index"].read_text()
    runs = pd.read_csv(store["out"] / "runs.csv")
    exp_id = re.search(r"#/experiments/(\d+)/runs/", text).group(1)
    for rid in runs["run_id"]:
        assert f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs/{rid}" in text
    assert "mlflow ui --backend-store-uri" in text


def _cli(store, *args):
    return report_main(["--uri", store["uri"], "--experiment", "synth", "--out", str(store["root"] / "cli"), *args])


@pytest.mark.parametrize("uri, message", [
    ("http://127.0.0.1:9", "--uri 'http://127.0.0.1:9' cannot be reached"),
    ("foo://bar/baz", "--uri 'foo://bar/baz' is not a database URI SQLAlchemy knows"),
    ("postgresql+psycopg2://h/db", "--uri 'postgresql+psycopg2://h/db' needs the database driver 'psycopg2'"),
])
def test_cli_store_it_cannot_use_is_one_line_exit_2(capsys, monkeypatch, uri, message):
    """--uri of a server that does not answer or a database without its driver: one line, exit 2 (a traceback,
    or a minute of retries, before; new-user test)."""
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    assert report_main(["--uri", uri]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nnexp.report: error: {message}") and err.count("\n") == 1


@pytest.mark.parametrize("args, message", [
    (["--experiment", "nope"], "experiment 'nope' not found; experiments in this store: Default, mixed, synth"),
    (["--metric", "val_los"], "metric 'val_los' was not logged"),
    (["--filter", "params.datset = 'x'"], "has param 'datset'"),
    (["--filter", "params.`dataset.name` = 'digits'"], "param dataset.name takes 'moons'"),
    (["--filter", "params.x ==== 3"], "invalid filter"),
    (["--sweep", "nope"], "--sweep 'nope' not found"),
    (["--target-loss", "-1"], "--target -1: a target of val_loss must be a finite number ≥ 0"),
    (["--target", "nan"], "--target nan: a target of val_loss must be a finite number ≥ 0"),
])
def test_cli_errors_one_line_exit_2(store, capsys, args, message):
    assert _cli(store, *args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("nnexp.report: error: ")


def test_filter_documented_example_works(store, capsys):
    """``params.dataset`` stands for the flattened ``params.`dataset.name```; a filter narrows the runs."""
    assert _cli(store, "--filter", "params.dataset = 'moons' and tags.activation = 'tanh'") == 0
    runs = pd.read_csv(store["root"] / "cli" / "runs.csv")
    assert set(runs["activation"]) == {"tanh"} and len(runs) == 5


def test_mixed_datasets_compared_within_the_largest_one(store, capsys):
    """Runs on moons (4) and xor (1): the report compares moons only and says how to report xor."""
    out = store["root"] / "mixed"
    text = build_report(store["uri"], "mixed", out_dir=out, boundaries=False).read_text()
    assert set(pd.read_csv(out / "runs.csv")["dataset"]) == {"moons"}
    assert list(pd.read_csv(out / "summary.csv")["activation"]) == ["relu", "tanh"]
    assert "No single winner: relu, tanh" in text and "Only dataset moons is compared here" in text
    # the command in the note, pasted into a shell (quoted with shlex), builds the xor report
    import html
    import shlex

    [code] = re.findall(r"<li>xor \(1 run\): <code>(.*?)</code></li>", text)
    argv = shlex.split(html.unescape(code))
    assert argv == ["python", "-m", "nnexp.report", "--experiment", "mixed", "--filter", "tags.dataset = 'xor'"]
    assert report_main(["--uri", store["uri"], *argv[3:], "--out", str(out / "xor")]) == 0
    runs = pd.read_csv(out / "xor" / "runs.csv")
    assert list(runs["dataset"]) == ["xor"]
    xor = (out / "xor" / "index.html").read_text()
    assert "Only dataset" not in xor and "; 1 configuration of activation, 1 seed each;" in xor
    assert "; 2 configurations of activation, 3 seeds each;" in store["index"].read_text()


def test_non_default_metric_gets_its_own_default_folder(store, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert report_main(["--uri", store["uri"], "--experiment", "synth", "--metric", "train_loss"]) == 0
    assert (tmp_path / "reports" / "synth" / "all-train_loss" / "index.html").exists()
    assert not (tmp_path / "reports" / "synth" / "all").exists()


def test_metric_option_ranks_by_accuracy_direction(store):
    out = store["root"] / "acc"
    build_report(store["uri"], "synth", out_dir=out, metric="train_loss", boundaries=False)
    t = pd.read_csv(out / "summary.csv")
    assert list(t["activation"]) == ["relu", "tanh"] and "train_loss mean" in t


# -- a real sweep -----------------------------------------------------------------------------
ACTS = ("sigmoid", "tanh", "relu")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """3 activations × 2 learning rates × 2 seeds (replicas) on moons, 6 epochs: the report the callback writes."""
    cwd = tmp_path_factory.mktemp("sweep")
    proc = run_cli(["-m", f"activation={','.join(ACTS)}", "optimizer.lr=0.1,1.0", "dataset=moons", "epochs=6",
                    "replicas=2", "model.hidden_sizes=[8]", "hydra.sweeper.params.seed=0", "tracking.progress=false"],
                   cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    index = next((cwd / "reports" / "activations").glob("*/index.html"))
    return {"cwd": cwd, "index": index, "out": index.parent}


SECTIONS = ("Conclusion", "Setup", "Summary", "Statistical comparison with the best activation", "Learning curves",
            "Sensitivity to the learning rate and initialisation", "Per-layer diagnostics", "Decision boundaries",
            "Diverged and failed runs (never averaged in)", "All runs in MLflow")


def test_sweep_report_has_every_section(sweep):
    text = sweep["index"].read_text()
    heads = re.findall(r"<h2>(.*?)</h2>", text)
    for s in SECTIONS:
        assert s in heads, s
    figs = {"curves_val_loss", "lr_sensitivity", "heatmap_activation_optimizer_lr", "layer_diagnostics",
            "decision_boundaries"}
    try:
        from nnexp.report import gallery  # noqa: F401 - the gallery lands separately

        figs.add("activation_gallery")
        assert "Activation gallery" in heads
    except ImportError:
        pass
    for f in figs:
        assert (sweep["out"] / f"{f}.png").stat().st_size > 5000
        assert not (sweep["out"] / f"{f}.svg").exists()  # PNG only, unless a build asks for SVG
        assert f'alt="{f}"' in text
    # the page is self-contained: every image is embedded
    assert not re.search(r'<img[^>]+src="(?!data:image/png;base64,)', text)
    runs = pd.read_csv(sweep["out"] / "runs.csv")
    assert len(runs) == 12 and set(runs["activation"]) == set(ACTS)
    summary = pd.read_csv(sweep["out"] / "summary.csv")
    assert len(summary) == 6 and set(summary["optimizer.lr"]) == {0.1, 1.0}
    assert "seeds" in text and "Hedges' g" in text and "Holm" in text
    # the header names the sweep (the folder is named after it), the parent run id only as a small link
    assert re.search(rf"sweep <b>{re.escape(sweep['out'].name)}</b> <small>\(parent run <a href='[^']+'><code>\w+",
                     text)


def test_decision_boundary_matches_model_accuracy(sweep):
    """The boundary figure's network, rebuilt from weights.npz, reproduces the run's logged test accuracy."""
    from nnexp.report.boundaries import network_from_weights, test_points
    from nnexp.report.load import load_runs, load_weights

    uri = f"sqlite:///{sweep['cwd'] / 'mlflow.db'}"
    runs = load_runs(uri, "activations")
    r = runs[runs["outcome"] == "finished"].iloc[0]
    w = load_weights(uri, r["run_id"], r["artifact_uri"])
    net = network_from_weights(w, r)
    pts = test_points(r)
    X = (pts[["x1", "x2"]].to_numpy() - w["feature_mean"]) / w["feature_scale"]
    acc = ((net.predict_logits(X)[0, :, 0] > 0) == pts["y"].to_numpy()).mean()
    assert acc == pytest.approx(r["test_accuracy"])


def test_every_figure_of_a_real_sweep_fits_and_boundary_panels_are_labelled(sweep, tmp_path, monkeypatch):
    """Each figure as drawn: no title or label outside the figure or over a legend; axis labels on the boundary
    panels (bottom row: x1, left column: x2); the activations in their fixed colours."""
    from test_report_evidence import _figure_checks

    from nnexp.report import plots
    from nnexp.report.figures import ACTIVATION_COLORS

    seen, original = {}, plots.figure_block

    def spy(fig, out_dir, name, caption, tight=False, written=None):
        seen[name] = _figure_checks(fig, name, tight)
        return original(fig, out_dir, name, caption, tight, written)

    monkeypatch.setattr(plots, "figure_block", spy)
    monkeypatch.setattr(plots, "PROCESSES", 0)  # every figure drawn in this process, where the spy sees it
    monkeypatch.setenv("NNEXP_CACHE_DIR", str(tmp_path / "cache"))  # the gallery drawn, not taken from the cache
    build_report(f"sqlite:///{sweep['cwd'] / 'mlflow.db'}", "activations", out_dir=tmp_path / "r")
    assert {"curves_val_loss", "lr_sensitivity", "layer_diagnostics", "decision_boundaries",
            "activation_gallery"} <= set(seen)
    assert {k: (v["outside"], v["over"]) for k, v in seen.items() if v["outside"] or v["over"]} == {}
    labels = seen["decision_boundaries"]["labels"]
    assert sum(x == "feature x1 (raw units)" for x, _ in labels) == 2  # one per learning rate (columns)
    assert sum(y == "feature x2 (raw units)" for _, y in labels) == len(ACTS)  # one per activation (rows)
    for name in ("curves_val_loss", "layer_diagnostics"):
        assert seen[name]["legend_colours"] == {a: ACTIVATION_COLORS[a].lower() for a in ACTS}


# -- the page in a real browser ---------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class _DevTools:
    """A minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe`` (fds 3 and 4, NUL-framed JSON)."""

    def __init__(self, binary: str, profile: Path):
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()

        def fds():
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--remote-debugging-pipe", "--window-size=1280,900", "about:blank"]
        self.proc = subprocess.Popen([binary, *flags], preexec_fn=fds, close_fds=False,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf, self._id, self.events = b"", 0, []

    def send(self, method, params=None, session=None, timeout=60.0):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        while True:
            m = self._next(timeout)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m["result"]
            self.events.append(m)

    def wait_event(self, method, timeout=60.0):
        for m in self.events:
            if m.get("method") == method:
                return m
        while True:
            m = self._next(timeout)
            self.events.append(m)
            if m.get("method") == method:
                return m

    def _next(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def close(self):
        try:
            self.send("Browser.close", timeout=10)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        os.close(self._r)


def test_report_renders_in_headless_chromium(sweep, tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium chromium-driver)")
    dt = _DevTools(CHROMIUM, tmp_path / "profile")
    try:
        target = dt.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = dt.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            dt.send(f"{domain}.enable", session=s)
        dt.send("Page.navigate", {"url": sweep["index"].as_uri()}, session=s)
        dt.wait_event("Page.loadEventFired")
        images = dt.send("Runtime.evaluate", {"returnByValue": True, "awaitPromise": True, "expression": """
            Promise.all([...document.images].map(i => i.decode().then(() => 1, () => 0)))
              .then(() => [...document.images].map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]))"""},
                         session=s)["result"]["value"]
        h2 = dt.send("Runtime.evaluate", {"returnByValue": True,
                                          "expression": "[...document.querySelectorAll('h2')].map(h => h.textContent)"},
                     session=s)["result"]["value"]
        height = dt.send("Runtime.evaluate", {"returnByValue": True, "expression": "document.body.scrollHeight"},
                         session=s)["result"]["value"]
        # every table scrolls in its own box; none is wider than the page
        boxes = dt.send("Runtime.evaluate", {"returnByValue": True, "expression": """
            [...document.querySelectorAll('table')].map(t => [getComputedStyle(t.parentElement).overflowX,
                t.parentElement.getBoundingClientRect().right <= document.documentElement.clientWidth + 1])"""},
                        session=s)["result"]["value"]
        shot = dt.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                  "clip": {"x": 0, "y": 0, "width": 1280, "height": min(height, 12000),
                                                           "scale": 1}}, session=s)
    finally:
        dt.close()
    path = Path(os.environ.get("NNEXP_SCREENSHOT_DIR", tmp_path)) / "report_screenshot.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    print(f"screenshot: {path}")
    assert len(images) >= 6
    bad = [i for i in images if not (i[1] and i[2] > 0 and i[3] > 0)]
    assert not bad, f"images that did not decode: {bad}"
    assert set(SECTIONS) <= set(h2)
    assert boxes and all(b == ["auto", True] for b in boxes), boxes
    errors = [m for m in dt.events
              if (m.get("method") == "Runtime.consoleAPICalled" and m["params"]["type"] in ("error", "assert"))
              or m.get("method") == "Runtime.exceptionThrown"
              or (m.get("method") == "Log.entryAdded" and m["params"]["entry"]["level"] == "error")]
    assert not errors, errors
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20000


@pytest.mark.parametrize("how", ["KeyboardInterrupt", "another error after Ctrl-C"])
def test_an_interrupted_report_command_ends_in_one_line_and_130(store, capsys, monkeypatch, how):
    """Ctrl-C while ``python -m nnexp.report`` builds: one line and exit 130, no traceback; also when the interrupt
    cut an import short and surfaced as another error (seen: scipy's 'generic_type ... already registered')."""
    import signal

    import nnexp.__main__ as entry
    from nnexp.report import __main__ as cli_module

    def interrupted(*args, **kwargs):
        if how == "KeyboardInterrupt":
            raise KeyboardInterrupt
        entry._INTERRUPTS.append(signal.SIGINT)
        raise ImportError('generic_type: type "ObjSense" is already registered!')

    monkeypatch.setattr(cli_module, "build_report", interrupted)
    # as in a fresh command (an earlier test in this worker may have left another handler)
    old = signal.signal(signal.SIGINT, signal.default_int_handler), signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        rc = cli_module.cli(["--uri", store["uri"], "--experiment", "synth", "--out", str(store["root"] / "cut")])
        restored = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGINT, old[0])
        signal.signal(signal.SIGTERM, old[1])
    assert rc == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nnexp.report: interrupted; the report was not finished")
    assert restored == (signal.default_int_handler, signal.SIG_DFL)  # the handlers are given back


def test_a_report_error_not_caused_by_an_interrupt_still_raises(store, monkeypatch):
    from nnexp.report import __main__ as cli_module

    monkeypatch.setattr(cli_module, "build_report", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        cli_module.cli(["--uri", store["uri"], "--experiment", "synth", "--out", str(store["root"] / "cut")])


@pytest.mark.parametrize("where", ["a file", "under a file", "a missing mount"])
def test_a_report_folder_that_cannot_be_written_is_one_line_and_2(store, capsys, where):
    """``--out`` naming a file, a path under a file or under /proc: one line naming the folder and what to do, exit
    2, no traceback (it printed FileExistsError / FileNotFoundError tracebacks; new-user test)."""
    from nnexp.report.__main__ import main as report_main

    afile = store["root"] / "notes.txt"
    afile.write_text("mine")
    out = {"a file": afile, "under a file": afile / "r", "a missing mount": Path("/proc/nnexp-none/r")}[where]
    rc = report_main(["--uri", store["uri"], "--experiment", "synth", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith(f"nnexp.report: error: cannot write the report to {out}: ") and "--out DIR" in err
    assert afile.read_text() == "mine"  # nothing of the user's is touched
