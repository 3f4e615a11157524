"""How a study's wall time, store size and report time grow with its number of runs (issue 11, goal 2).

For each tracking backend (``sqlite``: ``mlflow.db`` in the launch directory; ``postgres``: ``mlflow server`` on
PostgreSQL, started with :class:`nnexp.team_server.TeamServer` in a temporary folder) and each size:

* ``27``: ``experiments/scale_1008.yaml`` cut to 3 activations x 3 learning rates x 1 initialiser x 3 seeds;
* ``1008``: the experiment as it is (14 x 6 x 3 x 4);

it runs ``python -m nnexp -m experiment=scale_1008 ... tracking.report=false`` in a fresh folder, then the report
``python -m nnexp.report --experiment scale_1008 --sweep latest``, and records: the sweep's wall, the report's
wall, their sum (the study's wall with its report), the peak resident memory of the largest process
(``wait4``'s ``ru_maxrss``: the sweep's own process, its metric writer, a report worker) and of the whole process
tree (``/proc`` sampled every 0.2 s), the number of child runs in the store, and the store's size (SQLite: the
database file with its WAL, and ``mlartifacts/``; PostgreSQL: ``pg_database_size`` and the server's artifact
folder).

``--clone-to N`` then grows the largest measured sweep to about N runs with ``benchmarks/scale_fill.py`` (each
run cloned with further seeds: same tags, params and metric histories as the runs the sweep trained) and times the
report and ``load_runs`` alone on it: the report's growth measured, the sweep's wall at N extrapolated linearly
from the two trained sizes (said so in the table: ``extrapolated``).

    python benchmarks/scale.py                                   # both backends, 27 and 1,008, clone to 10,080
    python benchmarks/scale.py --backends sqlite --sizes 27 --clone-to 270 --json
    python benchmarks/scale.py --extra 'hydra/launcher=joblib'   # any further overrides for the sweeps

Timings on a shared machine are noisy: the load average at start and end is recorded with them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SIZES = {
    27: ["activation=relu,tanh,sigmoid", "optimizer.lr=0.01,0.1,1.0", "init=he_normal", "replicas=3"],
    1008: [],
}
EXPERIMENT = "scale_1008"


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (Linux ``/proc``)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            rss[int(d.name)] = int((d / "statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo.extend(children.get(p, []))
    return total


def timed(cmd: list[str], cwd: Path, env: dict | None = None) -> dict:
    """Run ``cmd``; return its wall seconds, exit code, peak RSS of its largest process and of its process tree."""
    t0 = time.perf_counter()
    with open(cwd / "stdout.txt", "ab") as out, open(cwd / "stderr.txt", "ab") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err, env={**os.environ, **(env or {})})
        peak = [0]
        done = threading.Event()

        def sample():
            while not done.wait(0.2):
                peak[0] = max(peak[0], _tree_rss(proc.pid))

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        th.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": time.perf_counter() - t0, "rc": proc.returncode, "max_rss_mb": usage.ru_maxrss / 1024,
            "tree_rss_mb": peak[0] / 2**20}


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


class Backend:
    """Where a measured sweep writes: a SQLite file in its folder, or a PostgreSQL-backed MLflow server."""

    def __init__(self, name: str, work: Path):
        self.name, self.work, self.server = name, work, None
        if name == "postgres":
            from nnexp.team_server import TeamServer, free_port

            root = work / "team"
            root.mkdir(parents=True)
            root.chmod(0o755)  # PostgreSQL runs as the 'postgres' user when this runs as root
            work.chmod(0o755)
            self.server = TeamServer(root, port=free_port(), pg_port=free_port(), workers=2)
            self.server.start()

    def overrides(self, size: int) -> list[str]:
        # one experiment per size on the shared server, so that each report reads its own sweep
        return [f"tracking.uri={self.server.uri}", f"tracking.experiment={EXPERIMENT}_{size}"] if self.server else []

    def experiment(self, size: int) -> str:
        return f"{EXPERIMENT}_{size}" if self.server else EXPERIMENT

    def uri(self, folder: Path) -> str:
        return self.server.uri if self.server else f"sqlite:///{folder / 'mlflow.db'}"

    def db_url(self, folder: Path) -> str:
        return self.server.backend_uri if self.server else f"sqlite:///{folder / 'mlflow.db'}"

    def db_env(self) -> dict:
        return {"PGPASSFILE": str(self.server.dir / "pgpass")} if self.server else {}

    def artifacts(self, folder: Path) -> Path:
        return self.server.dir / "artifacts" if self.server else folder / "mlartifacts"

    def store_bytes(self, folder: Path) -> dict:
        if not self.server:
            db = sum(_size(folder / f) for f in ("mlflow.db", "mlflow.db-wal"))
            return {"db_mb": db / 2**20, "artifacts_mb": _size(folder / "mlartifacts") / 2**20}
        import sqlalchemy as sa

        os.environ.update(self.db_env())
        eng = sa.create_engine(self.server.backend_uri)
        with eng.connect() as con:
            db = con.execute(sa.text("SELECT pg_database_size('mlflow')")).scalar()
        eng.dispose()
        return {"db_mb": db / 2**20, "artifacts_mb": _size(self.artifacts(folder)) / 2**20}

    def close(self) -> None:
        if self.server:
            self.server.stop()


def count_children(uri: str, experiment: str, parent: str) -> int:
    from nnexp.report.load import load_runs

    return len(load_runs(uri, experiment, parent_id=parent))


def parent_of(uri: str, experiment: str) -> str:
    from nnexp import tracking

    c = tracking.client(uri)
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], "tags.`nnexp.kind` = 'sweep'", order_by=["attributes.start_time DESC"],
                         max_results=1)
    return runs[0].info.run_id


def report(py: str, backend: Backend, folder: Path, size: int, tag: str) -> dict:
    out = folder / f"report-{tag}"
    r = timed([py, "-m", "nnexp.report", "--experiment", backend.experiment(size), "--sweep", "latest",
               "--uri", backend.uri(folder), "--out", str(out)], folder)
    r["ok"] = r["rc"] == 0 and (out / "index.html").exists()
    return r


def load_seconds(py: str, uri: str, experiment: str, parent: str, folder: Path) -> dict:
    """``load_runs`` of the sweep, alone, in a fresh process: seconds (after imports) and rows."""
    code = ("import json,sys,time; from nnexp import tracking; from nnexp.report.load import load_runs;"
            "tracking.client(sys.argv[1]); t=time.perf_counter(); df=load_runs(sys.argv[1], sys.argv[2], parent_id=sys.argv[3]);"
            "print(json.dumps({'seconds': time.perf_counter()-t, 'rows': len(df)}))")
    p = subprocess.run([py, "-c", code, uri, experiment, parent], cwd=folder, capture_output=True, text=True)
    return json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else {"error": p.stderr[-500:]}


def measure(py: str, backend: Backend, size: int, extra: list[str], root: Path) -> dict:
    folder = root / f"{backend.name}-{size}"
    folder.mkdir()
    sweep = timed([py, "-m", "nnexp", "-m", f"experiment={EXPERIMENT}", *SIZES[size], "tracking.report=false",
                   *backend.overrides(size), *extra], folder)
    uri, exp = backend.uri(folder), backend.experiment(size)
    parent = parent_of(uri, exp)
    rep = report(py, backend, folder, size, "trained")
    row = {"backend": backend.name, "runs_planned": size, "kind": "trained", "sweep_s": sweep["seconds"],
           "sweep_rc": sweep["rc"], "report_s": rep["seconds"], "report_ok": rep["ok"],
           "wall_s": sweep["seconds"] + rep["seconds"],
           "max_rss_mb": max(sweep["max_rss_mb"], rep["max_rss_mb"]),
           "tree_rss_mb": max(sweep["tree_rss_mb"], rep["tree_rss_mb"]),
           "runs": count_children(uri, exp, parent), **backend.store_bytes(folder),
           "load_runs": load_seconds(py, uri, exp, parent, folder), "folder": str(folder), "parent": parent}
    return row


def clone(py: str, backend: Backend, base: dict, target: int) -> dict:
    folder = Path(base["folder"])
    copies = max(1, round(target / base["runs"]) - 1)
    env = {**os.environ, **backend.db_env()}
    t = time.perf_counter()
    subprocess.run([py, str(HERE / "scale_fill.py"), "--db", backend.db_url(folder), "--parent", base["parent"],
                    "--copies", str(copies), "--artifacts", str(backend.artifacts(folder))], check=True, env=env,
                   cwd=folder, capture_output=True)
    fill_s = time.perf_counter() - t
    size = base["runs_planned"]
    uri, exp = backend.uri(folder), backend.experiment(size)
    rep = report(py, backend, folder, size, "cloned")
    return {"backend": backend.name, "runs_planned": base["runs"] * (copies + 1), "kind": "cloned", "fill_s": fill_s,
            "report_s": rep["seconds"], "report_ok": rep["ok"], "max_rss_mb": rep["max_rss_mb"],
            "tree_rss_mb": rep["tree_rss_mb"], "runs": count_children(uri, exp, base["parent"]),
            **backend.store_bytes(folder), "load_runs": load_seconds(py, uri, exp, base["parent"], folder),
            "folder": str(folder)}


def extrapolate(rows: list[dict]) -> None:
    """Fill ``sweep_s`` / ``wall_s`` of cloned rows from a line through the two trained sizes of their backend."""
    for row in rows:
        if row["kind"] != "cloned":
            continue
        trained = sorted((r for r in rows if r["backend"] == row["backend"] and r["kind"] == "trained"),
                         key=lambda r: r["runs"])
        if len(trained) < 2:
            continue
        a, b = trained[0], trained[-1]
        slope = (b["sweep_s"] - a["sweep_s"]) / (b["runs"] - a["runs"])
        row["sweep_s"] = b["sweep_s"] + slope * (row["runs"] - b["runs"])
        row["wall_s"] = row["sweep_s"] + row["report_s"]
        row["sweep_extrapolated"] = True


def table(rows: list[dict]) -> str:
    head = (f"{'backend':9} {'runs':>6} {'kind':8} {'sweep s':>9} {'report s':>9} {'wall s':>9} {'load_runs s':>11} "
            f"{'db MB':>8} {'artif. MB':>9} {'max RSS MB':>10} {'tree RSS MB':>11}")
    lines = [head]
    for r in rows:
        sweep, wall = r.get("sweep_s"), r.get("wall_s")
        mark = "*" if r.get("sweep_extrapolated") else ""
        lr = r["load_runs"].get("seconds", float("nan"))
        lines.append(f"{r['backend']:9} {r['runs']:>6} {r['kind']:8} {f'{sweep:.1f}{mark}' if sweep else '-':>9} "
                     f"{r['report_s']:>9.1f} {f'{wall:.1f}{mark}' if wall else '-':>9} {lr:>11.2f} {r['db_mb']:>8.1f} "
                     f"{r['artifacts_mb']:>9.1f} {r['max_rss_mb']:>10.0f} {r['tree_rss_mb']:>11.0f}")
    lines.append("* extrapolated linearly from the two trained sizes (not trained)")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default="sqlite,postgres")
    p.add_argument("--sizes", default="27,1008")
    p.add_argument("--clone-to", type=int, default=10080, help="0: no cloned size")
    p.add_argument("--extra", action="append", default=[], help="further overrides for the sweeps")
    p.add_argument("--keep", action="store_true", help="keep the work folder (stores, reports)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    py = sys.executable
    root = Path(tempfile.mkdtemp(prefix="nnexp-scale-"))
    root.chmod(0o755)  # PostgreSQL (run as the user "postgres" under root) must reach its folder below
    load0 = os.getloadavg()
    rows = []
    try:
        for name in a.backends.split(","):
            backend = Backend(name, root / f"{name}-work")
            try:
                for size in map(int, a.sizes.split(",")):
                    rows.append(measure(py, backend, size, a.extra, root))
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                if a.clone_to:
                    rows.append(clone(py, backend, rows[-1], a.clone_to))
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            finally:
                backend.close()
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    extrapolate(rows)
    print(table(rows))
    print(f"load average {load0[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end; {os.cpu_count()} cores")
    if a.json:
        print(json.dumps({"rows": rows, "load_start": load0, "load_end": os.getloadavg()}))


if __name__ == "__main__":
    main()
