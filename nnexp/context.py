"""What a run and its experiment say about where they come from, in MLflow's own terms.

- **Source tags** (:func:`source_tags`): MLflow's ``mlflow.source.type`` (``LOCAL``),
  ``mlflow.source.name`` (the command, ``python -m nnexp``) and, when the launch folder
  (else nnexp's own folder) is in a git checkout, ``mlflow.source.git.commit``,
  ``mlflow.source.git.branch`` and ``mlflow.source.git.repoURL``: the tags MLflow's
  fluent ``start_run`` sets, which its UI shows in the run's Source column.
- **Experiment description** (:func:`describe_experiment`): MLflow keeps an experiment's
  description in the tag ``mlflow.note.content`` (markdown). A study's description is
  the leading comment block of its experiment file (:func:`nnexp.studies.question`).
- **UI view** (:data:`EXPERIMENT_TAGS`, :func:`view_url`): MLflow 3's UI opens an experiment
  in its GenAI view unless the experiment's tag ``mlflow.experimentKind`` is
  ``custom_model_development`` (or the URL carries ``workflowType=machine_learning``),
  and shows the runs with the columns Source, Models and Dataset. nnexp stores a
  view of the runs table in the experiment tag ``mlflow.sharedViewState.nnexp``
  (the columns activation, learning rate, initialiser, ``val_loss``, ``val_accuracy``,
  sorted by ``val_loss``), which the UI applies when the URL carries
  ``viewStateShareKey=nnexp``: :func:`view_url` gives that URL. (Read from MLflow
  3.17's UI code: ``mlflow/server/js``, keys ``mlflow.experimentKind``,
  ``mlflow.sharedViewState.`` and ``viewStateShareKey``.)
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path

__all__ = ["run_context", "source_tags", "describe_experiment", "EXPERIMENT_TAGS", "VIEW_KEY", "view_url", "git_info"]

#: The view of the runs table stored with every experiment (see the module docstring).
VIEW_KEY = "nnexp"

_VIEW = {
    "selectedColumns": ["attributes.`Models`", "attributes.`Dataset`", "params.`activation.name`",
                        "params.`optimizer.lr`", "params.`init.resolved`", "params.`seed`",
                        "metrics.`val_loss`", "metrics.`val_accuracy`", "metrics.`test_accuracy`"],
    "orderByKey": "metrics.`val_loss`",
    "orderByAsc": True,
}

#: Tags every experiment nnexp creates carries: MLflow's model-training view and nnexp's table view.
EXPERIMENT_TAGS = {
    "mlflow.experimentKind": "custom_model_development",
    f"mlflow.sharedViewState.{VIEW_KEY}": json.dumps(_VIEW, separators=(",", ":")),
}


def view_url(experiment_id: str, host: str = "http://127.0.0.1:5000") -> str:
    """The experiment's runs table in the MLflow UI, in the model-training view with nnexp's columns."""
    return f"{host}/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}&workflowType=machine_learning"


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):  # no git, or a hung file system
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


@functools.lru_cache(maxsize=8)
def git_info(folder: str) -> dict[str, str]:
    """MLflow's git source tags for ``folder``'s checkout (commit, branch, remote URL), ``{}`` outside git.

    Computed once per folder and process (three ``git`` calls, a few ms each).
    """
    cwd = Path(folder)
    commit = _git(["rev-parse", "HEAD"], cwd)
    if commit is None:
        return {}
    tags = {"mlflow.source.git.commit": commit}
    branch = _git(["rev-parse", "--abbrev-ref", "HEAD"], cwd)
    if branch and branch != "HEAD":
        tags["mlflow.source.git.branch"] = branch
    remote = _git(["config", "--get", "remote.origin.url"], cwd)
    if remote:
        tags["mlflow.source.git.repoURL"] = remote
    return tags


def source_tags(launch_dir: str | os.PathLike) -> dict[str, str]:
    """MLflow's source tags for a run launched from ``launch_dir`` (see the module docstring).

    The git commit is the launch folder's checkout (where a study's files and data live),
    else nnexp's own checkout (an editable install), else absent.
    """
    tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": "python -m nnexp"}
    git = git_info(str(Path(launch_dir).resolve())) or git_info(str(Path(__file__).resolve().parent))
    return {**tags, **git}


#: Experiments whose description this process has already checked.
_DESCRIBED: set[tuple[str, str]] = set()


def describe_experiment(c, experiment_id: str, text: str | None) -> None:
    """Set the experiment's description (``mlflow.note.content``) to ``text`` unless it already has one.

    A description edited in the MLflow UI is kept. Checked once per experiment and process.
    """
    from .tracking import retry

    key = (str(getattr(c, "tracking_uri", id(c))), experiment_id)
    if not text or key in _DESCRIBED:
        return
    _DESCRIBED.add(key)
    exp = retry(c.get_experiment, experiment_id)
    if not exp.tags.get("mlflow.note.content"):
        try:
            retry(c.set_experiment_tag, experiment_id, "mlflow.note.content", text)
        except Exception as e:  # noqa: BLE001 - a parallel job of the sweep set it first (same text)
            if "unique constraint" not in str(e).lower():
                raise


def run_context(c, experiment_id: str, cfg, paths: dict) -> dict[str, str]:
    """At a job's start: describe the experiment with its study's question (once), and return the source tags.

    The study is the ``experiment=<name>`` choice (else ``cfg.study``), found by
    :func:`nnexp.studies.find_study_file`; ``paths`` is :func:`nnexp.app.job_paths`'s.
    """
    from .studies import find_study_file, question

    name = paths.get("choices", {}).get("experiment") or cfg.get("study")
    if name:
        f = find_study_file(name, paths["launch_dir"])
        if f is not None:
            describe_experiment(c, experiment_id, question(f))
    return source_tags(paths["launch_dir"])
