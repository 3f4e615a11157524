"""Run identity: which runs are the same configuration.

One module owns the answer, and every consumer (resume, de-duplication, the
printed sweep summary, the report, run names and console lines) uses it.

At job start the job builds the *canonical configuration*: a flat mapping of
dotted keys to JSON values (``None``, ``bool``, ``int``, ``float``, ``str``,
lists), with every ``auto`` resolved to what is actually used and file data
replaced by the digest of its content. From it:

- the **configuration id** hashes everything that changes what is trained,
  seed and replica excluded: runs with the same id are seeds of one
  configuration;
- the **run key** hashes the configuration id and the seed: two runs with the
  same key trained the same network (a duplicate).

Both are stored as tags on the run (``nnexp.config_id``, ``nnexp.run_key``),
with the canonical configuration itself as JSON (``nnexp.config``).
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["file_digest"]

#: Bytes read at a time when hashing a file.
_CHUNK = 1 << 20


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, as the first 16 hex digits.

    The digest names the data's content, not its path: a CSV whose labels were
    edited gets a new digest (and so a new configuration id), the same file
    copied elsewhere keeps its digest. MLflow's dataset inputs carry the same
    digest.

    Raises
    ------
    OSError
        If the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()[:16]
