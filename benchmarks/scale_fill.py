"""Grow a sweep's runs in an MLflow store by cloning them, to time the report at sizes not worth training.

``clone_children(db_url, parent_id, copies)`` copies every child run of the sweep ``parent_id`` ``copies``
times, as new child runs of the same parent, row for row in the store's own tables (``runs``, ``tags``,
``params``, ``metrics``, ``latest_metrics``, ``inputs``, ``input_tags``; the database is written directly
with SQLAlchemy, so a 10,000-run store is filled in seconds, not the ~20 minutes that MLflow's per-run APIs
take). Copy ``k`` of a run has the same configuration and the seed ``seed + k * n_seeds`` (``n_seeds`` = the
sweep's seeds per configuration), so each configuration gets ``n_seeds * (copies + 1)`` seeds, each with its own
``nnexp.run_key`` and run name: exactly the tags, params and metrics a sweep with that many seeds writes
(same metric values: the report's timings do not depend on them). Artifacts (``weights_s*.npz``,
``config.yaml``) are copied when the store's artifact root is a local folder (``artifact_root``).

    python benchmarks/scale_fill.py --db sqlite:///mlflow.db --parent <parent run id> --copies 9

``db_url`` is the *database* (``sqlite:///...`` or ``postgresql+psycopg2://...``), not an ``http://`` server:
for a server, clone in its backing database.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import uuid
from pathlib import Path

import sqlalchemy as sa

TABLES_BY_RUN = ("tags", "params", "metrics", "latest_metrics")


def _new_key(old: str, copy: int) -> str:
    return hashlib.sha256(f"{old}/{copy}".encode()).hexdigest()[:16]


def clone_children(db_url: str, parent_id: str, copies: int, artifact_root: str | Path | None = None,
                   chunk: int = 20000) -> int:
    """Clone every child of sweep ``parent_id`` ``copies`` times; return the number of runs added.

    Parameters
    ----------
    db_url : str
        SQLAlchemy URL of the tracking store's database.
    parent_id : str
        The sweep's parent run (tag ``mlflow.parentRunId`` of its children).
    copies : int
        Copies per child (``copies=9`` turns 1,008 runs into 10,080).
    artifact_root : path, optional
        Local folder holding ``<...>/<run id>/artifacts``: each run's artifact folder is copied too.
    """
    eng = sa.create_engine(db_url)
    md = sa.MetaData()
    names = ["runs", *TABLES_BY_RUN, "inputs", "input_tags"]
    md.reflect(eng, only=names)
    t = {n: md.tables[n] for n in names}
    with eng.begin() as con:
        ids = [r[0] for r in con.execute(sa.select(t["tags"].c.run_uuid).where(
            t["tags"].c.key == "mlflow.parentRunId", t["tags"].c.value == parent_id))]
        runs = [dict(r._mapping) for r in con.execute(sa.select(t["runs"]).where(t["runs"].c.run_uuid.in_(ids)))]
        per_run = {n: [dict(r._mapping) for r in con.execute(sa.select(t[n]).where(t[n].c.run_uuid.in_(ids)))]
                   for n in TABLES_BY_RUN}
        inputs = [dict(r._mapping) for r in con.execute(sa.select(t["inputs"]).where(
            t["inputs"].c.destination_id.in_(ids)))]
        in_ids = [r["input_uuid"] for r in inputs]
        input_tags = [dict(r._mapping) for r in con.execute(sa.select(t["input_tags"]).where(
            t["input_tags"].c.input_uuid.in_(in_ids)))] if in_ids else []
        wanted, folders = set(ids), {}  # run id -> its artifact folder: <root>/<run id> (SQLite store) or <root>/<experiment>/<run id>
        if artifact_root is not None:
            for d in [*Path(artifact_root).glob("*"), *Path(artifact_root).glob("*/*")]:
                if d.name in wanted and d.is_dir():
                    folders[d.name] = d
        seeds = [int(r["value"]) for r in per_run["params"] if r["key"] == "seed"]
        n_seeds = max(seeds) - min(seeds) + 1 if seeds else 1
        seed_of = {r["run_uuid"]: int(r["value"]) for r in per_run["params"] if r["key"] == "seed"}
        for k in range(1, copies + 1):
            new = {old: uuid.uuid4().hex for old in ids}
            rows: dict[str, list] = {n: [] for n in names}
            for r in runs:
                old = r["run_uuid"]
                seed = seed_of.get(old, 0) + k * n_seeds
                rows["runs"].append({**r, "run_uuid": new[old], "artifact_uri": r["artifact_uri"].replace(old, new[old]),
                                     "name": re.sub(r"-s\d+$", f"-s{seed}", r["name"] or "")})
            for n in TABLES_BY_RUN:
                for r in per_run[n]:
                    old = r["run_uuid"]
                    r = {**r, "run_uuid": new[old]}
                    if n == "params" and r["key"] == "seed":
                        r["value"] = str(seed_of[old] + k * n_seeds)
                    elif n == "tags" and r["key"] in ("nnexp.run_key", "nnexp.request_id"):
                        r["value"] = _new_key(r["value"], k)
                    elif n == "tags" and r["key"] == "mlflow.runName":
                        r["value"] = re.sub(r"-s\d+$", f"-s{seed_of.get(old, 0) + k * n_seeds}", r["value"])
                    rows[n].append(r)
            new_in = {r["input_uuid"]: uuid.uuid4().hex for r in inputs}
            rows["inputs"] = [{**r, "input_uuid": new_in[r["input_uuid"]], "destination_id": new[r["destination_id"]]}
                              for r in inputs]
            rows["input_tags"] = [{**r, "input_uuid": new_in[r["input_uuid"]]} for r in input_tags]
            for n in names:
                for i in range(0, len(rows[n]), chunk):
                    if rows[n][i:i + chunk]:
                        con.execute(t[n].insert(), rows[n][i:i + chunk])
            if artifact_root is not None:
                for old, nid in new.items():
                    if old in folders:
                        shutil.copytree(folders[old], folders[old].parent / nid)
    eng.dispose()
    return len(ids) * copies


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", required=True, help="SQLAlchemy URL of the store's database")
    p.add_argument("--parent", required=True, help="the sweep's parent run id")
    p.add_argument("--copies", type=int, required=True)
    p.add_argument("--artifacts", default=None, help="local artifact root to copy run folders in")
    a = p.parse_args(argv)
    print(clone_children(a.db, a.parent, a.copies, a.artifacts))


if __name__ == "__main__":
    main()
