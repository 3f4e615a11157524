"""Run identity: which runs are the same configuration.

One module owns the answer, and every consumer (resume, de-duplication, the
printed sweep summary, the report, run names and console lines) uses it.

At job start the job builds the *canonical configuration*
(:func:`canonical`): a flat mapping of dotted keys to JSON values (``None``,
``bool``, ``int``, ``float``, ``str``, lists), with every ``auto`` and every
default resolved to what is actually used, keys that the chosen components do
not read set to ``None``, and file data replaced by the digest of its content.
Config groups are named by their group (``activation``, ``init``,
``optimizer``, ``dataset``), not ``<group>.name``. From it:

- the **configuration id** (:func:`config_id`) hashes everything that changes
  what is trained, seed and replica excluded: runs with the same id are seeds
  of one configuration;
- the **run key** (:func:`run_key`) hashes the configuration id and the seed:
  two runs with the same key trained the same network (a duplicate).

Both are stored as tags on the run (:func:`tags`): ``nnexp.config_id``,
``nnexp.run_key``, the canonical configuration itself as compact JSON
(``nnexp.config``) and the version of this scheme (``nnexp.identity``). Runs
recorded before these tags existed are read back from their params as well as
possible (:func:`canonical_from_params`) and flagged ``legacy``: their ids
never equal a new run's, so they are never silently merged with new runs.

What is *not* identity: ``tracking.*`` (where and how a run is recorded),
``study``, ``blas_threads`` (results are the same on any number of threads),
``hydra``, ``dataset.path`` (the file's content is, as ``dataset.digest``),
``seed`` (in the run key only) and ``replicas`` (replica ``k`` is the run of
seed ``seed + k``).

Hashes are SHA-256 of the compact, key-sorted JSON of the canonical
configuration without its ``None`` entries (so that a key added to the schema
later with a default of ``None`` keeps existing ids), first 16 hex digits.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
from typing import Any, Iterable, Mapping

from omegaconf import DictConfig, OmegaConf

__all__ = ["file_digest", "flatten", "canonical", "canonical_from_params", "config_id", "run_key", "tags", "to_json",
           "from_json", "canonical_key", "varying_keys", "order_keys", "describe", "run_name", "format_value", "comparable",
           "VERSION", "TAG_CONFIG_ID", "TAG_RUN_KEY", "TAG_CONFIG", "TAG_VERSION", "GROUPS", "EXCLUDED"]

#: Bytes read at a time when hashing a file.
_CHUNK = 1 << 20

#: Version of the identity scheme, stored as the tag ``nnexp.identity``.
VERSION = "1"
TAG_CONFIG_ID = "nnexp.config_id"
TAG_RUN_KEY = "nnexp.run_key"
TAG_CONFIG = "nnexp.config"
TAG_VERSION = "nnexp.identity"

#: Config groups: canonical key ``<group>`` for ``<group>.name``.
GROUPS = ("activation", "init", "optimizer", "dataset")

#: Top-level keys that are not part of a run's identity (``seed`` is, in the run key only).
EXCLUDED = ("tracking", "study", "claims", "blas_threads", "hydra", "seed", "replicas")

#: Leading keys of a label or run name, in this order; the rest follow sorted.
_FIRST = ("activation", "optimizer.lr", "init", "optimizer", "model.hidden_sizes", "batch_size", "epochs", "dataset")

#: Short forms of keys in run names (``relu-lr0.1-h[4,4]-s2``); a group's value stands alone.
_SHORT = {"optimizer.lr": "lr", "model.hidden_sizes": "h", "batch_size": "bs", "epochs": "e"}


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


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a nested config (DictConfig or mapping) to ``{"optimizer.lr": 0.1, ...}``; lists stay lists."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _json_value(v: Any) -> Any:
    """A JSON value with one spelling per value: tuples as lists, NumPy scalars as Python numbers."""
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):  # NumPy scalar
        v = v.item()
    if isinstance(v, float) and v.is_integer() and not isinstance(v, bool):
        return float(v)
    return v


def canonical_key(key: str) -> str | None:
    """The canonical key of a config key or command-line override key, or None if it is not part of identity.

    ``activation.name`` and ``activation`` (the group) give ``activation``;
    ``+model.loss`` gives ``model.loss``; ``dataset.path`` gives ``dataset.digest``;
    ``seed`` gives ``seed``; ``tracking.*``, ``hydra/...``, ``hydra.*`` and ``experiment`` give None.
    """
    key = key.lstrip("+~").strip()
    if not key or "/" in key or key == "experiment":
        return None
    parts = key.split(".")
    if parts[0] in EXCLUDED and parts[0] != "seed":
        return None
    if len(parts) == 2 and parts[0] in GROUPS and parts[1] == "name":
        return parts[0]
    if key == "dataset.path":
        return "dataset.digest"
    return key


def canonical(cfg: DictConfig | Mapping, *, task: str = "classification", n_classes: int | None = None,
              digest: str | None = None) -> dict[str, Any]:
    """The canonical configuration of a composed config: what is trained, every ``auto`` and default resolved.

    Parameters
    ----------
    cfg : DictConfig or mapping
        A composed, validated config (:func:`nnexp.config.validate`).
    task, n_classes : str, int
        The dataset's task and number of classes (:class:`nnexp.data.Dataset`): they decide ``model.loss=auto``
        and the output unit.
    digest : str, optional
        :func:`file_digest` of the data file, for datasets read from a file (``dataset=csv``).

    Returns
    -------
    dict
        Flat ``{key: value}``, sorted by key: ``activation`` and its parameters as bound (``activation.alpha``
        with the activation's default when null, None when the activation takes none); ``init`` resolved
        (``auto`` -> the family's initialiser), ``init.gain`` the gain that scales the weights (None for an
        initialiser without gain), ``init.std`` / ``init.limit`` as used; ``optimizer`` hyper-parameters as
        used (None where the optimiser or schedule does not read them); ``model.loss`` resolved and
        ``model.output`` its output unit; ``model.hidden_sizes`` a list; ``dataset`` options as the loader
        reads them (defaults filled in), ``dataset.digest`` for file data; every other key as composed.
        ``seed``, ``replicas``, ``tracking.*``, ``study``, ``blas_threads``, ``hydra`` and ``dataset.path``
        are left out.

    Raises
    ------
    ValueError
        If a component is unknown (an invalid config; :func:`nnexp.config.validate` says which key).
    """
    from .activations import get_activation
    from .data import DATASET_KEYS, DATASETS
    from .initializers import INITIALIZERS, auto_initializer
    from .losses import get_loss, resolve_loss_name
    from .optimizers import OPTIMIZERS

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    flat = {k: v for k, v in flatten(cfg).items() if k.split(".")[0] not in EXCLUDED}
    out: dict[str, Any] = {}
    for k, v in flat.items():
        ck = canonical_key(k)
        if ck is not None and ck != "dataset.digest":
            out[ck] = _json_value(v)

    # hidden layers as trained (model.depth x model.width replaces model.hidden_sizes; both stay, as the user's keys)
    if out.get("model.depth") is not None and out.get("model.width") is not None:
        out["model.hidden_sizes"] = [int(out["model.width"])] * int(out["model.depth"])

    # activation: its parameters as bound (defaults filled in), None for those it does not take
    act = get_activation(out["activation"], **{p: out.get(f"activation.{p}") for p in ("alpha", "beta", "approximate")
                                               if out.get(f"activation.{p}") is not None})
    for p in ("alpha", "beta", "approximate"):
        out[f"activation.{p}"] = _json_value(act.params[p]) if p in act.params else None

    # init: auto resolved, the gain used, parameters as used
    init = auto_initializer(act.spec.family) if out["init"] == "auto" else out["init"]
    spec = INITIALIZERS[init]
    out["init"] = init
    out["init.gain"] = (float(act.gain) if out.get("init.gain") is None else float(out["init.gain"])) \
        if spec.uses_gain else None
    for p in ("std", "limit"):
        out[f"init.{p}"] = (float(spec.params[p]) if out.get(f"init.{p}") is None else float(out[f"init.{p}"])) \
            if p in spec.params else None
    if out.get("init.bias") != "constant":
        out["init.bias_value"] = None

    # optimizer: the hyper-parameters it reads, defaults filled in; schedule parameters of its schedule only
    cls, takes = OPTIMIZERS[out["optimizer"]]
    sig = inspect.signature(cls.__init__).parameters
    for p in ("momentum", "beta1", "beta2", "eps"):
        if p in takes:
            out[f"optimizer.{p}"] = float(sig[p].default if out.get(f"optimizer.{p}") is None else out[f"optimizer.{p}"])
        else:
            out[f"optimizer.{p}"] = None
    schedule = out.get("optimizer.schedule", "constant")
    for p, used_by in (("step_size", "step"), ("gamma", "step"), ("min_lr", "cosine")):
        if f"optimizer.{p}" in out and schedule != used_by:
            out[f"optimizer.{p}"] = None

    # loss and output unit, as the dataset decides them
    loss = get_loss(resolve_loss_name(out.get("model.loss", "auto"), task, n_classes))
    out["model.loss"] = loss.name
    if out.get("model.output") in (None, "auto"):
        out["model.output"] = loss.output

    # dataset: the options its loader reads, with the loader's defaults; file data by content
    loader = inspect.signature(DATASETS[out["dataset"]]).parameters
    for p in DATASET_KEYS:
        if p == "path":
            continue
        if p in loader and loader[p].kind is loader[p].KEYWORD_ONLY:
            given = out.get(f"dataset.{p}")
            out[f"dataset.{p}"] = _json_value(loader[p].default if given is None else given)
        else:
            out[f"dataset.{p}"] = None
    out["dataset.digest"] = digest
    return dict(sorted(out.items()))


def canonical_from_params(params: Mapping[str, str], tags: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Best reading of a legacy run's canonical configuration from its MLflow params (strings) and tags.

    For runs recorded before the identity tags (``nnexp.identity`` missing). ``init`` is the resolved
    initialiser (param ``init.resolved``, else tag ``init``, else ``init.name``), ``model.loss`` the resolved
    loss (param ``loss.resolved``, else tag ``loss``); other ``auto`` values and defaults stay as recorded.
    The result carries ``legacy: True``, so its :func:`config_id` never equals a new run's.
    """
    tags = tags or {}
    out: dict[str, Any] = {}
    for k, v in params.items():
        if k in ("init.resolved", "loss.resolved", "n_features", "n_classes", "n_train"):
            continue
        ck = canonical_key(k)
        if ck is None or ck == "seed" or ck == "dataset.digest":
            continue
        out[ck] = _param_value(v)
    for key, tag in (("activation", "activation"), ("optimizer", "optimizer"), ("dataset", "dataset")):
        if key not in out and tags.get(tag):
            out[key] = tags[tag]
    init = params.get("init.resolved") or tags.get("init")
    if init:
        out["init"] = init
    loss = params.get("loss.resolved") or tags.get("loss")
    if loss:
        out["model.loss"] = loss
    out["legacy"] = True
    return dict(sorted(out.items()))


def _param_value(text: str | None) -> Any:
    """An MLflow param string back as a JSON value (``null`` -> None, ``[4, 4]`` -> a list, ``0.1`` -> 0.1)."""
    if text is None or text in ("null", "None"):
        return None
    if text in ("True", "False", "true", "false"):
        return text.lower() == "true"
    try:
        v = json.loads(text)
        return _json_value(v) if isinstance(v, (int, float, list)) else text
    except ValueError:
        return text


def _identity_items(canon: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _json_value(v) for k, v in canon.items() if v is not None and k != "seed"
            and not (isinstance(v, float) and math.isnan(v))}


def config_id(canon: Mapping[str, Any]) -> str:
    """Configuration id: SHA-256 (first 16 hex) of the canonical configuration without seed and ``None`` entries.

    Runs with the same id are seeds of one configuration. A ``seed`` key, if present, is ignored.
    """
    text = json.dumps(_identity_items(canon), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_key(config: str, seed: int) -> str:
    """Run key: SHA-256 (first 16 hex) of ``"<config_id>:<seed>"``; equal keys trained the same network."""
    return hashlib.sha256(f"{config}:{int(seed)}".encode()).hexdigest()[:16]


def to_json(canon: Mapping[str, Any]) -> str:
    """Compact, key-sorted JSON of a canonical configuration (``None`` kept as ``null``)."""
    return json.dumps({k: _json_value(v) for k, v in canon.items()}, sort_keys=True, separators=(",", ":"))


def from_json(text: str) -> dict[str, Any]:
    """The canonical configuration stored as :func:`to_json` (``nnexp.config`` tag)."""
    return json.loads(text)


def tags(canon: Mapping[str, Any], seed: int) -> dict[str, str]:
    """The identity tags of a run: ``nnexp.config_id``, ``nnexp.run_key``, ``nnexp.config``, ``nnexp.identity``."""
    cid = config_id(canon)
    return {TAG_CONFIG_ID: cid, TAG_RUN_KEY: run_key(cid, seed), TAG_CONFIG: to_json(canon), TAG_VERSION: VERSION}


def comparable(v: Any) -> Any:
    """A value comparable across runs: lists as tuples, NaN and None as None, integral floats as ints."""
    if isinstance(v, (list, tuple)):
        return tuple(comparable(x) for x in v)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def order_keys(keys: Iterable[str]) -> list[str]:
    """``keys`` without repeats, in label order: ``activation, optimizer.lr, init, optimizer, model.hidden_sizes,
    batch_size, epochs, dataset``, then the others sorted."""
    keys = list(dict.fromkeys(keys))
    first = [k for k in _FIRST if k in keys]
    return first + sorted(k for k in keys if k not in first)


def varying_keys(runs, keys: Iterable[str] | None = None) -> list[str]:
    """The canonical keys whose values differ across ``runs`` (``None`` and lists included), ``activation`` first.

    Parameters
    ----------
    runs : DataFrame or iterable of mappings
        One row per run: a frame from :func:`nnexp.report.load.load_runs` (its ``attrs["identity_keys"]``
        names the canonical columns, ``legacy`` included) or canonical configurations.
    keys : iterable of str, optional
        The keys to consider; default every canonical key of ``runs``. ``seed`` is never returned.

    Returns
    -------
    list of str
        In the order ``activation, optimizer.lr, init, optimizer, model.hidden_sizes, batch_size, epochs,
        dataset``, then the others sorted. A key missing from some runs counts as ``None`` there.
    """
    if hasattr(runs, "columns"):  # a DataFrame
        if keys is None:
            keys = runs.attrs.get("identity_keys") or [c for c in runs.columns if c in _FIRST]
        keys = [k for k in keys if k in runs.columns and k != "seed"]
        rows = [{k: v for k, v in zip(keys, vals)} for vals in runs[keys].itertuples(index=False, name=None)]
    else:
        rows = list(runs)
        if keys is None:
            keys = list(dict.fromkeys(k for r in rows for k in r))
        keys = [k for k in keys if k != "seed"]
    out = [k for k in keys if len({comparable(r.get(k)) for r in rows}) > 1]
    return order_keys(out)


def format_value(v: Any) -> str:
    """A value as a person writes it on the command line: ``null``, ``true``, ``0.1``, ``[4, 4]``; four or more
    equal list items as ``[64]*30``."""
    v = comparable(v)
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, tuple):
        if len(v) >= 4 and len(set(v)) == 1:  # a deep network of equal layers: [64]*30, not thirty 64s
            return f"[{format_value(v[0])}]*{len(v)}"
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, int) and abs(v) >= 10**16:  # optimizer.lr=1e300 compares as an integer: not 301 digits
        try:
            return f"{float(v):g}"
        except OverflowError:
            pass
    return str(v)


def describe(row: Mapping[str, Any], keys: Iterable[str]) -> str:
    """A short label of a configuration: ``relu, optimizer.lr=0.1, model.hidden_sizes=[4, 4]``.

    ``activation`` stands alone; every other key is ``key=value`` (:func:`format_value`). Keys missing from
    ``row`` read as null. An empty ``keys`` gives ``row["activation"]`` when there is one.
    """
    keys = list(keys) or (["activation"] if "activation" in row else [])
    parts = []
    for k in keys:
        v = row.get(k) if hasattr(row, "get") else row[k]
        parts.append(format_value(v) if k == "activation" else f"{k}={format_value(v)}")
    return ", ".join(parts)


def run_name(canon: Mapping[str, Any], keys: Iterable[str], seed: int) -> str:
    """A run's name from the keys its sweep varies: ``relu-lr0.1-h[4,4]-s2``.

    ``activation`` always comes first; a group (``init``, ``optimizer``, ``dataset``) stands as its value,
    ``optimizer.lr`` as ``lr<v>``, ``model.hidden_sizes`` as ``h<list>``, ``batch_size`` as ``bs<v>``,
    ``epochs`` as ``e<v>`` (``bs=null`` for a null), any other key as ``<last part>=<v>``; the seed ends it
    as ``s<seed>``.
    """
    parts = []
    for k in order_keys(["activation", *[k for k in keys if k != "seed"]]):
        v = format_value(canon.get(k)).replace(" ", "")
        if k in GROUPS:
            parts.append(v)
        elif k in _SHORT:
            parts.append(f"{_SHORT[k]}{v}" if v != "null" else f"{_SHORT[k]}=null")
        else:
            parts.append(f"{k.rsplit('.', 1)[-1]}={v}")
    return "-".join([*parts, f"s{int(seed)}"])
