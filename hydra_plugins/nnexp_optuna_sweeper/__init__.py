"""Registers nnexp's plugins with Hydra: ``hydra/sweeper=nnexp_optuna``, ``hydra/sweeper=nnexp_basic`` and
``hydra/launcher=nnexp_basic``.

Hydra instantiates plugins only from the ``hydra_plugins`` namespace package; the plugins themselves live in
:mod:`nnexp.search`, :mod:`nnexp.packing` and :mod:`nnexp.launcher`. This one package holds them all (its name is the
first one's), so that an installed nnexp needs no new plugin package. Importing this module does not import Optuna.
"""

from nnexp import launcher, packing, search


class NnexpOptunaSweeper(search.OptunaSweeper):
    """See :class:`nnexp.search.OptunaSweeper`."""


class NnexpBasicSweeper(packing.PackingSweeper):
    """See :class:`nnexp.packing.PackingSweeper`."""


class BasicLauncher(launcher.ComposingLauncher):
    """See :class:`nnexp.launcher.ComposingLauncher` (named as Hydra's: nnexp runs a ``*.BasicLauncher``'s jobs in
    the sweep's process)."""
