"""nnexp: which activation function trains a network best, and why.

A NumPy multilayer perceptron (:mod:`nnexp.model`, :mod:`nnexp.train`) trained
over Hydra sweeps (:mod:`nnexp.app`), tracked in MLflow (:mod:`nnexp.tracking`)
and compared in seaborn reports (:mod:`nnexp.report`).
"""

__version__ = "0.1.0"
