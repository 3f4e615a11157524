"""nnexp's user cache: files that are slow to make and safe to reuse across commands.

Three things live here, each named by everything that determines its content, so
that a changed input never meets a stale file:

- ``datasets/``: prepared datasets (loaded, split, standardised) as ``.npz``, keyed by
  the dataset's parameters, the versions of NumPy and scikit-learn and the source of
  :mod:`nnexp.data` (see :func:`nnexp.data.load`). A warm entry spares a job the
  import of scikit-learn (about a second) and the split;
- ``stores/``: an empty MLflow SQLite store migrated to the installed MLflow's schema,
  keyed by the MLflow version (see :func:`nnexp.tracking.prepare_store`). Copying it
  spares a new launch directory MLflow's schema migration (seconds);
- ``figures/``: the report's activation gallery PNG, keyed by the activations, their values,
  the drawing code, matplotlib's settings and the plotting libraries' versions (see
  :func:`nnexp.report.plots.gallery_cache_path`). It depends on no run, and drawing it is
  about 2 s of a small study's report.

The folder is ``$NNEXP_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/nnexp``, else
``~/.cache/nnexp``. Deleting it at any time is safe: entries are made again on
demand. Every file is written to a temporary name in the same folder and renamed
into place (:func:`atomic_write`), so a reader never sees a half-written file,
whether a writer is killed or two processes write the same entry at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable

__all__ = ["cache_dir", "key_of", "atomic_write"]


def cache_dir(kind: str) -> Path:
    """The cache folder for ``kind`` (``"datasets"``, ``"stores"`` or ``"figures"``); not created here."""
    root = os.environ.get("NNEXP_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(base) / "nnexp")
    return Path(root) / kind


def key_of(parts: dict[str, Any]) -> str:
    """A short stable name for ``parts``: the first 20 hex digits of the SHA-256 of their sorted JSON."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Make ``path`` by calling ``write(tmp)`` on a new empty file beside it, then renaming it into place.

    The folder is created if needed. If ``write`` raises, the temporary file is
    removed and the error propagates; ``path`` is then untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # the umask applies, as for any new file
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
