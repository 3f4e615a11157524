"""Registers nnexp's Optuna sweeper with Hydra (``hydra/sweeper=nnexp_optuna``).

Hydra instantiates plugins only from the ``hydra_plugins`` namespace package; the sweeper itself lives in
:mod:`nnexp.search`. Importing this module does not import Optuna.
"""

from nnexp import search


class NnexpOptunaSweeper(search.OptunaSweeper):
    """See :class:`nnexp.search.OptunaSweeper`."""
