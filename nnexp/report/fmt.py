"""Formatting of numbers, p-values and configuration values for the report's text and tables.

Configuration values come in every shape a sweep can give them: numbers, strings,
``None`` (``batch_size=null``), NaN (a key a run did not log) and lists or tuples
(``model.hidden_sizes``). :func:`val` prints each of them, :func:`matches` compares a
column with one of them element-wise without pandas broadcasting a tuple.
All text returned here is plain (not HTML-escaped); the template escapes it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["g", "p", "p_is", "val", "cfg", "n", "seed_text", "is_missing", "matches", "is_number"]


def is_missing(v) -> bool:
    """True for None and float NaN (a value a run did not have)."""
    return v is None or (isinstance(v, (float, np.floating)) and math.isnan(v))


def g(v, digits: int = 3) -> str:
    """A number with ``digits`` significant digits; ``–`` for None, NaN and infinities."""
    if v is None or isinstance(v, (list, tuple)):
        return "–" if v is None else val(v)
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f"{v:.{digits}g}" if math.isfinite(v) else "–"


def p(value) -> str:
    """A p-value: ``0.013``, ``< 0.001``, or ``–`` when there is none."""
    if value is None or not math.isfinite(value):
        return "–"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def p_is(value) -> str:
    """``p = 0.013`` or ``p < 0.001``, for running text."""
    text = p(value)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def val(v) -> str:
    """A configuration value as the user wrote it: ``0.1``, ``relu``, ``null``, ``[4, 4]``."""
    if is_missing(v):
        return "null"
    if isinstance(v, (list, tuple, np.ndarray)):
        return "[" + ", ".join(val(x) for x in v) + "]"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v)).lower()
    if isinstance(v, (float, np.floating)):
        return f"{float(v):g}"
    if isinstance(v, np.integer):
        return str(int(v))
    return str(v)


def cfg(row, keys) -> str:
    """``activation=relu, optimizer.lr=0.1`` for the ``keys`` of ``row``."""
    return ", ".join(f"{k}={val(row[k])}" for k in keys)


def n(count: int, noun: str) -> str:
    """``1 run``, ``3 runs``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def seed_text(seeds: pd.Series) -> str:
    """``3 seeds`` or ``2–3 seeds`` from the seed count per configuration."""
    if not len(seeds):
        return "0 finished seeds"
    lo, hi = int(seeds.min()), int(seeds.max())
    return f"{lo} seed{'s' if lo != 1 else ''}" if lo == hi else f"{lo}–{hi} seeds"


def _same(a, b) -> bool:
    if is_missing(a) or is_missing(b):
        return is_missing(a) and is_missing(b)
    if isinstance(a, (list, tuple, np.ndarray)) or isinstance(b, (list, tuple, np.ndarray)):
        return isinstance(a, (list, tuple, np.ndarray)) and isinstance(b, (list, tuple, np.ndarray)) \
            and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def matches(column: pd.Series, value) -> np.ndarray:
    """Boolean mask of ``column == value`` that treats None/NaN as equal and compares lists element-wise.

    Vectorised for a scalar ``value`` (a grid of 100,000 rows takes milliseconds); a list or tuple
    ``value`` is compared row by row.
    """
    if is_missing(value):
        return pd.isna(column).to_numpy(bool) if not isinstance(column, np.ndarray) else pd.isna(column)
    if not isinstance(value, (list, tuple, np.ndarray)):
        return np.asarray(pd.Series(column, copy=False) == value, bool)
    return np.fromiter((_same(x, value) for x in column), bool, count=len(column))


def is_number(v) -> bool:
    """A real number (not bool, not a list, not missing)."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) \
        and not is_missing(v)
