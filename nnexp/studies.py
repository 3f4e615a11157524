"""Where named studies (``experiment=<name>``) come from, and what question each asks.

A study is a YAML file of overrides (``# @package _global_``) chosen with
``experiment=<name>``. nnexp finds them in three kinds of place:

1. **nnexp's own** ``experiments/`` (installed as the package ``nnexp.experiments``);
2. **the launch folder's** ``experiments/<name>.yaml``: the documented default for your
   own studies, no option needed (a file there takes precedence over nnexp's of the same name);
3. **any config folder given to Hydra**, ``--config-dir <dir>`` or
   ``hydra.searchpath=[file://<dir>]``, holding ``<dir>/experiment/<name>.yaml`` (Hydra's own
   layout: the group folder ``experiment/`` inside a config folder).

The first two are registered in Hydra's ConfigStore (:func:`nnexp.config.register`);
Hydra finds the third itself, and :func:`config_dir_overrides` lets nnexp's preflight
check see the same folders as Hydra.

A study's *question* (:func:`question`) is the leading comment block of its file, up
to a line starting ``Run:`` or ``Finding``: it becomes the MLflow experiment's
description.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["study_files", "find_study_file", "question", "config_dir_overrides", "USER_STUDIES"]

#: The launch folder's study folder.
USER_STUDIES = "experiments"


def _package_dir() -> Path:
    from importlib.resources import files

    return Path(str(files("nnexp.experiments")))


def study_files(launch_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """``{name: file}`` of nnexp's studies and the launch folder's ``experiments/*.yaml`` (these win on a clash)."""
    out = {}
    launch = Path(launch_dir or Path.cwd()).resolve()
    for folder in (_package_dir(), launch / USER_STUDIES):
        if folder.is_dir():
            for f in sorted(folder.glob("*.yaml")):
                out[f.stem] = f
    return out


def _hydra_config_dirs() -> list[Path]:
    """The file folders of the running Hydra job's config search path (``--config-dir``, ``hydra.searchpath``)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    dirs = []
    for source in HydraConfig.get().runtime.config_sources:
        if source.get("schema") == "file" and source.get("path"):
            dirs.append(Path(source["path"]))
    return dirs


def find_study_file(name: str, launch_dir: str | os.PathLike | None = None) -> Path | None:
    """The file of study ``name``: in a Hydra config folder's ``experiment/``, else :func:`study_files`; else None."""
    for d in _hydra_config_dirs():
        f = d / "experiment" / f"{name}.yaml"
        if f.is_file():
            return f
    return study_files(launch_dir).get(name)


def question(path: str | os.PathLike) -> str | None:
    """The leading comment block of a study file as text (the study's question), or None if it has none.

    ``# @package`` lines are skipped; the block ends at the first line that is not a
    comment, or at a comment line starting ``Run:`` or ``Finding``.
    """
    lines = []
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        s = raw.strip()
        if not s.startswith("#"):
            break
        text = s.lstrip("#").strip()
        if text.startswith("@package"):
            continue
        if text.startswith(("Run:", "Finding")):
            break
        lines.append(text)
    out = "\n".join(lines).strip()
    return out or None


def config_dir_overrides(argv: list[str]) -> list[str]:
    """``argv`` with ``--config-dir <dir>`` (``-cd``) replaced by a ``hydra.searchpath`` override.

    Hydra adds a ``--config-dir`` folder to its search path itself; nnexp's preflight
    composes with Hydra's compose API, which reads ``hydra.searchpath`` but not that flag.
    An existing ``hydra.searchpath=[...]`` override is extended. For the preflight only:
    Hydra itself is given the command as typed.
    """
    out, folders, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        if a in ("--config-dir", "-cd") and i + 1 < len(argv):
            folders.append(argv[i + 1])
            i += 2
            continue
        if a.startswith("--config-dir="):
            folders.append(a.split("=", 1)[1])
        else:
            out.append(a)
        i += 1
    if not folders:
        return out
    from .config import ConfigError

    for f in folders:
        if not Path(f).is_dir():
            raise ConfigError(f"--config-dir {f}: no such folder; give a folder that holds experiment/<name>.yaml")
    uris = [f"file://{Path(f).resolve()}" for f in folders]
    for j, a in enumerate(out):
        if a.startswith("hydra.searchpath="):
            value = a.split("=", 1)[1].strip()
            inner = value[1:-1].strip() if value.startswith("[") and value.endswith("]") else value
            out[j] = f"hydra.searchpath=[{','.join(([inner] if inner else []) + uris)}]"
            return out
    return [*out, f"hydra.searchpath=[{','.join(uris)}]"]
