"""``python -m nnexp.report``: rebuild a report from the MLflow store.

Examples::

    python -m nnexp.report --experiment activations                 # the whole experiment
    python -m nnexp.report --experiment activations --sweep latest  # the latest sweep
    python -m nnexp.report --experiment activations --filter "params.dataset = 'digits'"
    python -m nnexp.report --filter 'params.`dataset.name` = "moons" and params.`optimizer.lr` = "0.1"'
    python -m nnexp.report --sweep latest --metric val_accuracy --target 0.9
    python -m nnexp.report --sweep 2026-11-29_17-40-12 --sweep latest          # two sweeps compared
    python -m nnexp.report --sweep latest --ui-url http://gpu-box:8080         # links to a UI elsewhere

Params are stored flattened (``dataset.name``, ``optimizer.lr``; values are
strings, so quote them); ``params.dataset``, ``params.activation``,
``params.init`` and ``params.optimizer`` stand for their ``.name``. Tags
``activation``, ``init``, ``optimizer``, ``dataset`` and ``loss`` hold the
resolved choices (``tags.init = 'he_normal'``). An unknown experiment, sweep,
metric or filter key ends with one line on stderr and exit status 2. Runs that
repeat a configuration and seed (same ``nnexp.run_key``: a single run
repeating a sweep's, or identical sweeps run at once) count once; stderr says
how many were dropped.

Output folders (``--out`` overrides): ``reports/<experiment>/<sweep>`` for a
sweep (the folder the sweep's own report uses), ``<sweep>+<sweep>`` for several,
``all`` for the experiment; a ``--filter`` report goes to its own folder,
``<selection>-filter-<8 hex of the filter>``, so it never overwrites a sweep's
report. A rebuild removes the files its previous build wrote and this one did not.
Run links point at ``--ui-url`` (default ``$NNEXP_UI_URL``, else
http://127.0.0.1:5000); the page prints the matching ``mlflow ui`` command.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .. import tracking
from ..config import ConfigError
from . import ReportError, build_report


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["gallery"]:  # python -m nnexp.report gallery [--out DIR]: the activation gallery
        from .gallery import main as gallery_main

        return gallery_main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m nnexp.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", "-e", default="activations", help="MLflow experiment name (default: activations)")
    p.add_argument("--sweep", "-s", action="append",
                   help="a sweep's parent run id or name, or 'latest'; repeat to compare sweeps in one report")
    p.add_argument("--filter", "-f", default="", help="MLflow search filter, e.g. \"params.dataset = 'digits'\"")
    p.add_argument("--uri", help="tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///./mlflow.db)")
    p.add_argument("--out", help="output folder (default: reports/<experiment>/<sweep, sweep+sweep or 'all'>, "
                                    "'-filter-<hash>' appended for a --filter, '-<metric>' for a --metric "
                                    "other than val_loss)")
    p.add_argument("--metric", "-m", default="val_loss",
                   help="primary metric that ranks and compares (default: val_loss; *accuracy: higher is better)")
    p.add_argument("--target", "--target-loss", "-t", dest="target", type=float, default=None,
                   help="threshold of 'epochs to target' on the primary metric "
                        "(default: the median final value over the finished runs; finite, >= 0 for losses, "
                        "in [0, 1] for accuracies)")
    p.add_argument("--ui-url", default=None,
                   help="address of the MLflow UI the run links point to (default: $NNEXP_UI_URL, else "
                        "http://127.0.0.1:5000)")
    p.add_argument("--no-boundaries", action="store_true", help="skip the decision-boundary figure")
    p.add_argument("--svg", action="store_true", help="also write every figure as SVG (default: PNG only)")
    args = p.parse_args(argv)
    from ..config import URI_SCHEMES, env_uri_problem

    env = os.environ.get("MLFLOW_TRACKING_URI")
    given = args.uri or env
    # a file store (a path, file:): MLflow's traceback; another scheme gets check_driver's line below
    if given and not given.startswith(URI_SCHEMES) and ("://" not in given or given.startswith("file:")):
        print("nnexp.report: error: " + (f"--uri {args.uri!r} is not a tracking URI; use sqlite:///<path>/mlflow.db, "
                                         "http://host:port or a database URI (postgresql://, mysql://)" if args.uri
                                         else env_uri_problem(env).replace("tracking.uri=", "--uri ", 1)),
              file=sys.stderr)
        return 2
    try:
        uri = tracking.resolve_uri(args.uri, Path.cwd())
    except ConfigError as e:
        print(f"nnexp.report: error: {e}", file=sys.stderr)
        return 2
    try:  # a server that does not answer, a database whose driver is missing: one line, not a traceback
        tracking.check_reachable(uri)
        tracking.check_driver(uri)
    except ConfigError as e:
        print(f"nnexp.report: error: {str(e).replace('tracking.uri=', '--uri ', 1)}", file=sys.stderr)
        return 2
    db = tracking.sqlite_path(uri)
    if db is not None and not db.exists():
        print(f"nnexp.report: error: no MLflow store at {db}; run a sweep here first or pass --uri", file=sys.stderr)
        return 2
    try:
        sweeps = [_resolve_sweep(uri, args.experiment, s) for s in dict.fromkeys(args.sweep or [])]
        parents = list(dict.fromkeys(pid for pid, _ in sweeps))
        out = Path(args.out) if args.out else Path.cwd() / "reports" / args.experiment / folder_name(
            [n for _, n in sweeps], args.filter, args.metric, args.target)
        index = build_report(uri, args.experiment, parent_id=parents or None, filter_string=args.filter, out_dir=out,
                             metric=args.metric, target=args.target, boundaries=not args.no_boundaries,
                             ui=args.ui_url, svg=args.svg)
    except ReportError as e:
        print(f"nnexp.report: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if not _under(e.filename, out):
            raise
        print(f"nnexp.report: error: {unwritable_line(e, out)}", file=sys.stderr)
        return 2
    _print_duplicates(index.parent / "duplicates.csv")
    print(index)
    if not uri.startswith(("http://", "https://")):  # the UI the page's links point to
        from .build import ui_command, ui_url

        print(f"runs:   {ui_command(uri, ui_url(args.ui_url))}")
    return 0


def _under(filename, out: Path) -> bool:
    """Whether ``filename`` (of an ``OSError``) is the report folder ``out``, in it, or one of its parents."""
    if not filename:
        return False
    path, out = Path(os.fsdecode(filename)).absolute(), out.absolute()
    return path == out or out in path.parents or path in out.parents


def unwritable_line(e: OSError, out: Path) -> str:
    """One line for a report folder that cannot be written (``--out`` a file, a missing or read-only place)."""
    where = os.fsdecode(e.filename) if e.filename else ""
    where = f" ({where})" if where and Path(where).absolute() != out.absolute() else ""
    return f"cannot write the report to {out}: {e.strerror or type(e).__name__}{where}; choose a folder you can write with --out DIR"


def folder_name(sweeps: list[str], filter_string: str, metric: str, target: float | None = None) -> str:
    """The default report folder's name: never the same for two different selections, metrics or targets.

    ``<sweep>`` (what the sweep's own report uses), ``<a>+<b>`` for several sweeps, ``all`` for the whole
    experiment; ``-filter-<first 8 hex of the filter's SHA-256>`` for a filter, ``-<metric>`` for a metric
    other than val_loss and ``-target<value>`` for a ``--target`` are appended.
    """
    import hashlib

    name = "+".join(sweeps) if sweeps else "all"
    if filter_string.strip():
        name += "-filter-" + hashlib.sha256(filter_string.strip().encode()).hexdigest()[:8]
    if metric != "val_loss":  # never overwrite the default metric's report
        name += f"-{metric}"
    if target is not None:  # nor the sweep's own report, written with the default target
        name += f"-target{target:g}"
    return name


def _print_duplicates(path: Path) -> None:
    """One line on stderr when the report dropped duplicate runs (``duplicates.csv`` lists them)."""
    if not path.exists():
        return
    import pandas as pd

    from .build import superseded

    dropped = pd.read_csv(path)
    retried = superseded(dropped)
    n, k = int((~retried).sum()), int(retried.sum())
    said = ([f"{n} duplicate run{'' if n == 1 else 's'} dropped (same nnexp.run_key as a kept run, counted once)"]
            if n else [])
    if k:
        said.append(f"{k} unfinished run{'' if k == 1 else 's'} dropped (killed or failed; another run of the same "
                    "configuration and seed is kept)")
    print(f"nnexp.report: {'; '.join(said)}: {path}", file=sys.stderr)


def _resolve_sweep(uri: str, experiment: str, sweep: str) -> tuple[str, str]:
    from .load import _experiment_id

    c = tracking.client(uri)
    exp_id = _experiment_id(c, experiment)
    parents = tracking.retry(c.search_runs, [exp_id], filter_string=f"tags.`{tracking.TAG}kind` = 'sweep'",
                             order_by=["attributes.start_time DESC"], max_results=1000)
    for r in parents:
        name = r.data.tags.get(f"{tracking.TAG}sweep", r.info.run_id)
        if sweep in ("latest", r.info.run_id, name):
            return r.info.run_id, name
    names = ", ".join(r.data.tags.get(f"{tracking.TAG}sweep", r.info.run_id) for r in parents[:10])
    raise ReportError(f"--sweep {sweep!r} not found in experiment {experiment!r}; sweeps: {names or 'none'}")


def cli(argv=None) -> int:
    """:func:`main` as the command runs it: Ctrl-C or SIGTERM ends it with one line and the shell's status (130,
    143), also when the interrupt surfaced as another error (an import it cut short)."""
    from ..__main__ import _interrupt_status, _unwatch_interrupts, _watch_interrupts

    interrupted = _watch_interrupts()
    try:
        return main(argv)
    except KeyboardInterrupt:
        pass
    except Exception:
        if not interrupted:
            raise
    finally:
        _unwatch_interrupts()
    print("nnexp.report: interrupted; the report was not finished (the runs are untouched: run the same command "
          "again to write it)", file=sys.stderr)
    return _interrupt_status(interrupted)


if __name__ == "__main__":
    sys.exit(cli())
