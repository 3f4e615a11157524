"""Registers nnexp's sweepers with Hydra: ``hydra/sweeper=nnexp_optuna`` and ``hydra/sweeper=nnexp_basic``.

Hydra instantiates plugins only from the ``hydra_plugins`` namespace package; the sweepers themselves live in
:mod:`nnexp.search` and :mod:`nnexp.packing`. This one package holds both (its name is the first one's), so that
an installed nnexp needs no new plugin package. Importing this module does not import Optuna.
"""

from nnexp import packing, search


class NnexpOptunaSweeper(search.OptunaSweeper):
    """See :class:`nnexp.search.OptunaSweeper`."""


class NnexpBasicSweeper(packing.PackingSweeper):
    """See :class:`nnexp.packing.PackingSweeper`."""
