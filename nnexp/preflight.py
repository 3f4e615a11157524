"""Validate every job of a command before Hydra launches anything.

Hydra reports a bad override with a multi-line message and a hint about
``HYDRA_FULL_ERROR``, and only once jobs are under way; a range error (a
learning rate <= 0) would only surface inside a job, after its MLflow run
exists. :func:`preflight` composes each job's config as Hydra's compose API does
(:class:`JobComposer`), runs :func:`nnexp.config.validate` and the data checks on it, and turns every
problem into one :class:`~nnexp.config.ConfigError` line that names the key.

Before composing, every override form Hydra's grammar accepts is checked (:func:`check_forms`: ``~key``,
``+``/``++``, group values, ``@package``), and every sweep is expanded twice, by Hydra and as written
(:func:`check_sweep`), so that a job never trains another value than the command says (Hydra 1.3 runs
``sort(range(100,301,100),reverse=true)`` as 201, 101, 1).
"""

from __future__ import annotations

import builtins
import dataclasses
import decimal
import functools
import inspect
import itertools
import math
import re
from pathlib import Path

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf

from .config import ACCEPTS, Config, ConfigError, config_groups, schema_keys, unknown_key_message, validate

__all__ = ["preflight", "expand_jobs", "JobComposer"]

#: Hydra launcher configs that nnexp's launchers extend, and the extra (pyproject.toml) and plugin that bring them.
LAUNCHER_EXTRAS = {"ray": ("ray", "Hydra's Ray launcher (hydra-ray-launcher)"),
                   "submitit_slurm": ("slurm", "Hydra's submitit launcher (hydra-submitit-launcher)"),
                   "submitit_local": ("slurm", "Hydra's submitit launcher (hydra-submitit-launcher)")}

#: Compose at most this many jobs one by one; larger sweeps are checked value by value.
FULL_CHECK_LIMIT = 512

#: The command lines :func:`preflight` has checked in this process (Hydra's sweeper need not compose their jobs again:
#: :meth:`nnexp.packing.PackingSweeper.validate_batch_is_legal`).
CHECKED: list[list[str]] = []


def _parse(argv: list[str]):
    from hydra._internal.utils import get_args_parser

    return get_args_parser().parse_args(argv)


def _value_of(key: str, overrides: list[str]) -> str | None:
    """The value the last override of ``key`` gives it (``None`` for ``~key`` or no override)."""
    for o in reversed(overrides):
        k, eq, v = o.partition("=")
        if eq and k.lstrip("+~") == key:
            return v
    return None


#: Hydra's messages about an override form, and the one line nnexp says instead.
_HYDRA_FORMS = (
    (r"Multiple values for ([\w/]+)\. To override a value use 'override [\w/]+: (.*)'",
     lambda m: f"+{m[1]}={m[2]}: {m[1]} is already chosen; write {m[1]}={m[2]} "
               "(+ adds a group or key that is not there yet)"),
    (r"Could not append to config\. An item is already at '([^']+)'",
     lambda m: f"+{m[1]}: {m[1]} already has a value; set it without + ({m[1]}=<value>); "
               "+ adds a key that is not there yet"),
    (r"Could not delete from config\. '([^']+)' does not exist", lambda m: unknown_key_message(m[1])),
    (r"In '([^']+)': ValidationError raised while composing config:\s*Merge error: \w+ is not a subclass of "
     r"(Activation|Init|Optimizer|Dataset)Config\. value: (.*)",
     lambda m: f"{m[1]}: '{m[2].lower()}: {m[3]}' sets the config group {m[2].lower()} as a value; choose it in "
               f"the file's defaults list ('- override /{m[2].lower()}: {m[3]}') or set its keys one by one"),
    (r"In '([^']+)': ValidationError raised while composing config:\s*Merge error: \w+ is not a subclass of "
     r"(Model|Tracking)Config\. value: (.*)",
     lambda m: f"{m[1]}: '{m[2].lower()}: {m[3]}' gives the section {m[2].lower()} a single value; set its keys "
               f"one by one ({m[2].lower()}.<key>: value; python -m nnexp --cfg job lists them)"),
    (r"force-add of config groups is not supported: '\+\+([^=']+)=?([^']*)'",
     lambda m: f"++{m[1]}: ++ does not apply to config groups; write {m[1]}={m[2] or '<option>'}"),
)


def _yaml_line(exc) -> str:
    """One line for a YAML syntax error in a config file: where, what, and how the parser saw it."""
    mark = exc.problem_mark or exc.context_mark
    where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}" if mark else "a config file"
    what = "; ".join(x for x in (exc.context, exc.problem) if x)
    return f"{where}: not valid YAML ({what})"


def _one_line(exc: BaseException, overrides: list[str]) -> str:
    """Turn a Hydra or OmegaConf error into one line naming the key."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import InterpolationResolutionError

    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file:
        group, _, option = exc.missing_cfg_file.rpartition("/")
        options = ", ".join(sorted(exc.options or []))
        if group == "hydra/launcher" and option in LAUNCHER_EXTRAS:  # nnexp_ray extends `ray`, not installed
            typed = _value_of(group, overrides) or option
            extra, plugin = LAUNCHER_EXTRAS[option]
            return f"hydra/launcher={typed} needs {plugin}, which is not installed: pip install -e \".[{extra}]\" in nnexp's folder"
        if group:
            return f"{group}={option!r} is not an option" + (f"; choose one of: {options}" if options else "")
        return f"config {option!r} not found"
    cause = exc
    while cause.__cause__ is not None and not getattr(cause, "full_key", None):
        cause = cause.__cause__
    text = str(exc)
    for pattern, say in _HYDRA_FORMS:
        m = re.search(pattern, text)
        if m:
            return say(m)
    full_key = getattr(cause, "full_key", None)
    m = re.search(r"Could not override '([^']+)'", text) or re.search(r"Key '([^']+)' (?:is not in struct|not in)", text)
    if m:
        key = m.group(1)
        if "not in struct" in str(cause) or "is not in struct" in text or "To append" in text:
            # a dict value (model={a: 1}) names its section; the key it lacks is the cause's
            return unknown_key_message(full_key if full_key and full_key.startswith(key) else key)
    lines = [line.strip() for line in str(cause).strip().splitlines() if line.strip()]
    first = lines[0] if lines else type(cause).__name__
    if first.endswith(":") and len(lines) > 1:  # Hydra's "... raised while composing config:" then the reason
        first = f"{first} {lines[1]}"
    if full_key and isinstance(cause, InterpolationResolutionError):  # ${oc.env:UNSET}, ${nope}
        value = _value_of(full_key, overrides)
        return f"{full_key}{f'={value!r}' if value is not None else ''}: {first}"
    if full_key:
        m = re.match(r"Value '(.*)' (?:of type|is not)", first)  # the value OmegaConf refused, else the last override
        value = m.group(1) if m else _value_of(full_key, overrides)
        shown = f"={value!r}" if value is not None else ""
        return f"{full_key}{shown} is not valid: expected {_expected(full_key, first)}"
    return first


#: Phrases of OmegaConf's conversion errors, and what they mean for a user.
_TYPE_WORDS = (("to Integer", "an integer"), ("to Float", "a number"), ("valid bool", "true or false"),
               ("ListConfig", "a list, e.g. [64]"), ("DictConfig", "a mapping"), ("is not Optional", "a value, not null"),
               ("is not a subclass of int", "an integer"), ("is not a subclass of float", "a number"),
               ("Config. value:", "its keys set one by one (python -m nnexp --cfg job lists them)"))


def _expected(key: str, error: str) -> str:
    """What ``key`` accepts: from :data:`nnexp.config.ACCEPTS`, else from the type in OmegaConf's ``error``."""
    if key in ACCEPTS:
        return ACCEPTS[key]
    for phrase, words in _TYPE_WORDS:
        if phrase in error:
            return words
    return error


#: The only ``_target_`` keys an override may set: Hydra's own launcher and sweeper (better chosen as
#: ``hydra/launcher=<name>``). Anywhere else a ``_target_`` names code to import and call, so it is refused.
ALLOWED_TARGETS = ("hydra.launcher._target_", "hydra.sweeper._target_")


def check_no_targets(overrides: list[str]) -> None:
    """Refuse overrides that set a ``_target_`` (in the key or inside a dict value) outside :data:`ALLOWED_TARGETS`.

    Raises
    ------
    ConfigError
        Naming the override.
    """
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if "_target_" in o and key not in ALLOWED_TARGETS:
            raise ConfigError(f"{key}: overrides may not set _target_ (no config value is run as code); "
                              f"pick a launcher or sweeper with hydra/launcher=<name> or hydra/sweeper=<name>")


def _compose(overrides: list[str], with_hydra: bool = False, config_name: str = "config") -> DictConfig:
    from hydra import compose

    return compose(config_name=config_name, overrides=overrides, return_hydra_config=with_hydra)


class JobComposer:
    """Composes the config of each job like Hydra's compose API, composing each distinct defaults list once.

    Hydra composes a config in two steps: the defaults list (the config-group
    choices, ``activation=relu``, ``hydra/launcher=joblib``), then the other
    overrides (``seed=1``, ``optimizer.lr=0.1``) applied to the result. The jobs
    of a sweep mostly differ in such values, so this composes each set of
    group choices (with Hydra's own keys, ``hydra.*``) once (about 70 ms each) and
    applies every job's value overrides to a copy without Hydra's config, with the
    function Hydra itself applies them with: the configs and the errors are Hydra's.
    Each override text is parsed once. Call it inside an initialised Hydra (``initialize_config_module``).
    """

    def __init__(self, config_name: str = "config"):
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.override_parser.overrides_parser import OverridesParser

        self.config_name = config_name
        self.repo = GlobalHydra.instance().config_loader().repository
        self.parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
        self.composed: dict[tuple[str, ...], DictConfig] = {}
        self.parsed: dict[str, object] = {}

    def _is_group(self, o) -> bool:
        # Hydra's own rule (hydra._internal.defaults_list.Overrides): a group choice names a config group
        # and is not a dict value; everything else is applied to the composed config
        return self.repo.group_exists(o.key_or_group) and not isinstance(o.value(), dict)

    def _composed_part(self, o) -> bool:
        # composed by Hydra: the group choices, and Hydra's own keys (the search path decides which group options
        # exist: hydra.searchpath, --config-dir); no job sweeps these (preflight refuses sweeps of Hydra's keys)
        return self._is_group(o) or o.is_hydra_override()

    def _parse(self, overrides: list[str]) -> list:
        """Hydra's parse of each override text, once per text (about 1 ms each; the jobs of a sweep share most)."""
        for line in overrides:
            if line not in self.parsed:
                self.parsed[line] = self.parser.parse_overrides([line])[0]
        return [self.parsed[line] for line in overrides]

    def __call__(self, overrides: list[str]) -> DictConfig:
        """The config of the job with ``overrides``, as ``hydra.compose(config_name, overrides)`` returns it."""
        import copy

        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from omegaconf import open_dict, read_write

        parsed = self._parse(overrides)
        composed = tuple(o.input_line for o in parsed if self._composed_part(o))
        if composed not in self.composed:
            cfg = _compose(list(composed), with_hydra=True, config_name=self.config_name)
            with read_write(cfg), open_dict(cfg):
                del cfg["hydra"]  # before copying: Hydra's own config is most of the copy's cost
            self.composed[composed] = cfg
        cfg = copy.deepcopy(self.composed[composed])
        ConfigLoaderImpl._apply_overrides_to_config([o for o in parsed if not self._composed_part(o)], cfg)
        return cfg


@functools.cache
def _default_groups() -> frozenset[str]:
    """The config groups the primary config's defaults list chooses (``activation``, ..., ``experiment``): a plain
    ``group=option`` overrides them; another group (``tracking``) is added with ``+group=option``."""
    from importlib.resources import files

    defaults = yaml.safe_load(files("nnexp.conf").joinpath("config.yaml").read_text())["defaults"]
    return frozenset(k for d in defaults if isinstance(d, dict) for k in d if not k.startswith("override "))


def _required_groups() -> tuple[str, ...]:
    """The config groups every run needs a choice of: the schema's sections without a default (activation, ...)."""
    return tuple(f.name for f in dataclasses.fields(Config) if f.default == MISSING)


def check_forms(parsed: list, repo) -> None:
    """Refuse the override forms that Hydra accepts but that leave a job without a key it reads.

    ``~key`` and ``~key=value`` delete a key: the schema's keys (``~model.loss``)
    and Hydra's own config cannot go (every job reads them; set a value
    instead), nor a config group every run needs (``~activation``). A config
    group takes one option's name, not ``null``, a number or a list (Hydra would merge a
    list's options into one config: ``activation=[relu,tanh]`` trains tanh), at its own place
    (no ``@package``); an override needs a key.

    Raises
    ------
    ConfigError
        Naming the override and how to write it.
    """
    keys = set(schema_keys())
    for o in parsed:
        key = o.key_or_group
        if not key:
            raise ConfigError(f"{o.input_line!r} has no key before '='; write key=value, e.g. epochs=30")
        if o.package is not None and not o.is_hydra_override():
            raise ConfigError(f"{o.input_line}: nnexp reads {key} at its own place in the config; "
                              f"drop @{o.package} (e.g. {key}=<option>)")
        is_group = repo.group_exists(key) and not isinstance(o.value(), dict)
        options = ", ".join(sorted(repo.get_group_options(key))) if repo.group_exists(key) else ""
        if o.is_delete():
            if key.startswith(("hydra.", "hydra/")) or key == "hydra":
                raise ConfigError(f"{o.input_line}: Hydra's own config cannot be removed (nnexp's jobs need it); "
                                  + (f"choose another option with {key}=<option> ({options})" if is_group
                                     else f"set a value with {key}=<value>"))
            if is_group and key in _required_groups():
                raise ConfigError(f"{o.input_line}: every run needs a choice of {key}; "
                                  f"choose one with {key}=<option> ({options})")
            if key in keys and any(k.startswith(key + ".") for k in keys):  # a section: ~model, ~tracking
                raise ConfigError(f"{o.input_line}: {key} cannot be removed (every run reads it); set its keys one "
                                  f"by one, {key}.<key>=<value> (python -m nnexp --cfg job shows them)")
            if key in keys:
                raise ConfigError(f"{o.input_line}: {key} cannot be removed (every run reads it); set a value "
                                  f"with {key}=<value> (python -m nnexp --cfg job shows the current one)")
        if is_group and not o.is_delete() and not o.is_add() and not key.startswith("hydra") \
                and key not in _default_groups():
            raise ConfigError(f"{o.input_line}: {key} is an optional config group, not in the defaults list; add it "
                              f"with +{o.input_line} ({key}: {options})")
        bare_delete = o.is_delete() and not o.is_sweep_override() and o.value() is None  # ~experiment
        if is_group and not bare_delete and not all(isinstance(v, str) for v in _values(o)):
            raise ConfigError(f"{o.input_line}: {key} takes the name of one option (a list would merge several "
                              f"into one config; -m {key}=a,b runs each); choose from: {options}")


def _values(o) -> list:
    """The values of override ``o``: its one value, or a sweep's values (none if the sweep cannot be expanded)."""
    if not o.is_sweep_override():
        return [o.value()]
    try:
        return list(itertools.islice(o.sweep_iterator(), MAX_SWEEP_VALUES))
    except Exception:  # a sweep Hydra cannot expand: check_sweep says why, naming the key
        return []


#: The most values one sweep function may give, and the most jobs one command may launch.
MAX_SWEEP_VALUES = 100_000
MAX_JOBS = 1_000_000


def _range_as_written(*args, **kwargs):
    """``range()`` as its arguments are written: ``r[i] = start + i * step`` with ``r[i]`` before ``stop``.

    In decimal arithmetic on the numbers as typed (``range(0.1,0.5,0.1)`` gives
    0.1, 0.2, 0.3, 0.4), as a list that Hydra's own ``sort``, ``shuffle``, casts and
    ``tag`` then work on. Its signature is Hydra's ``range`` (set below).
    """
    from hydra._internal.grammar import grammar_functions
    from hydra.core.override_parser.types import ChoiceSweep

    sweep = grammar_functions.range(*args, **kwargs)
    start, stop, step = sweep.start, sweep.stop, sweep.step
    if all(type(v) is int for v in (start, stop, step)):
        values = builtins.range(start, stop, step)  # a zero step raises ValueError, as in Hydra
    else:
        d0, d1, ds = (decimal.Decimal(repr(float(v))) for v in (start, stop, step))
        if ds == 0:
            raise ValueError("range() arg 3 must not be zero")
        values = [float(d0 + i * ds) for i in builtins.range(max(0, math.ceil((d1 - d0) / ds)))]
    if len(values) > MAX_SWEEP_VALUES:
        raise ValueError(f"{len(values)} values; at most {MAX_SWEEP_VALUES:,} per sweep")
    return ChoiceSweep(list=list(values), simple_form=False)


def _reference_parser(config_loader):
    """Hydra's override parser with :func:`_range_as_written` for ``range``: the sweep as the user wrote it."""
    from hydra._internal.grammar import grammar_functions
    from hydra._internal.grammar.functions import Functions
    from hydra.core.override_parser.overrides_parser import OverridesParser, create_functions

    hydra_functions = create_functions()
    functions = Functions()
    for name, func in hydra_functions.functions.items():
        if name == "range":
            func = functools.wraps(grammar_functions.range)(_range_as_written)
            func.__signature__ = inspect.signature(grammar_functions.range)
        functions.register(name=name, func=func)
    return OverridesParser(functions, config_loader=config_loader)


def _listed(values: list[str], most: int = 6) -> str:
    return ", ".join(values) if len(values) <= most else ", ".join(values[:most - 1]) + f", ... ({len(values)} values)"


def check_sweep(o, reference) -> list[str]:
    """The values Hydra will run for the sweep override ``o``, checked against the sweep as written.

    Hydra 1.3's ``sort()`` of a ``range()`` rebuilds the range from its exclusive
    end (``sort(range(100,301,100),reverse=true)`` runs 201, 101, 1; Hydra issue
    #3228) and its float ranges add binary steps (``range(0.1,0.5,0.1)`` runs
    0.30000000000000004). ``reference`` (:func:`_reference_parser`) expands the
    same text with a ``range`` that keeps the values as written; any difference
    (as multisets for ``shuffle``) is refused with the explicit list to write.

    Raises
    ------
    ConfigError
        For a sweep whose values differ, an ``interval()`` (which the basic sweeper cannot run),
        a sweep Hydra cannot expand (a zero step), or one with more than :data:`MAX_SWEEP_VALUES` values.
    """
    from hydra.errors import HydraException

    key = o.get_key_element()
    if not o.is_discrete_sweep():
        raise ConfigError(f"{o.input_line}: interval() is a continuous range that only a sampling sweeper draws "
                          f"from; the basic sweeper runs listed values: write {key.lstrip('+~')}=a,b,c or "
                          f"{key.lstrip('+~')}=range(start,stop,step)")
    try:
        got = list(itertools.islice(o.sweep_string_iterator(), MAX_SWEEP_VALUES + 1))
        want_override = reference.parse_overrides([o.input_line])[0]
        want = list(want_override.sweep_string_iterator())
    except (ValueError, TypeError, HydraException) as e:
        raise ConfigError(f"{o.input_line}: {_reason(e, o.input_line).split(': ', 1)[-1]}") from None
    if len(got) > MAX_SWEEP_VALUES:
        raise ConfigError(f"{o.input_line}: more than {MAX_SWEEP_VALUES:,} values; at most that many per sweep")
    shuffled = getattr(want_override.value(), "shuffle", False)
    if shuffled:  # the values in the order written, not in this draw's order
        want = [want_override._get_value_element_as_str(v) for v in want_override.value().list]
    if (sorted(got) != sorted(want)) if shuffled else (got != want):
        why = ("Hydra's sort() of a range() counts from the range's exclusive end, Hydra issue #3228"
               if "sort(" in o.input_line and "range(" in o.input_line else "steps added in binary floating point")
        raise ConfigError(f"{o.input_line}: Hydra would run {_listed(got)}, not {_listed(want)} as written ({why}); "
                          f"write {key}=" + (f"shuffle({','.join(want)})" if shuffled else ",".join(want)))
    return got


#: Keys one sweep cannot vary: its parent run, store and report are one.
UNSWEPT = ("tracking.experiment", "tracking.uri", "tracking")


def _reason(e: BaseException, line: str) -> str:
    """The line of a Hydra parser error that says what is wrong (not its header, caret or link)."""
    said = [t for t in str(e).splitlines() if t.strip() and t.strip() != "^"
            and not t.startswith(("Error parsing override", "See https"))]
    return said[0].replace(f"LexerNoViableAltException: {line}", "a character it cannot read") if said else type(e).__name__


def parse_each(parser, lines: list[str]) -> list:
    """Parse override ``lines`` with Hydra's ``parser``; a line its grammar refuses ends in one line naming it.

    Raises
    ------
    ConfigError
        ``<override>: <what the grammar says>``, with how to quote a value.
    """
    from hydra.errors import HydraException

    parsed = []
    for line in lines:
        if line.lstrip("+~").startswith("="):  # before the value is parsed: +=tag(_,0,0) has no key to blame
            raise ConfigError(f"{line!r} has no key before '='; write key=value, e.g. epochs=30")
        try:
            parsed.extend(parser.parse_overrides([line]))
        except (HydraException, ValueError, TypeError) as e:
            reason = _reason(e, line)
            if " while evaluating " in reason:  # a sweep function given arguments it does not take
                raise ConfigError(f"{line}: {reason.split(': ', 1)[-1]}") from None
            raise ConfigError(f"{line}: not an override Hydra can read ({reason}); write key=value, quoting a value "
                              "with spaces or special characters, e.g. 'key=\"a b\"'") from None
    return parsed


def expand_jobs(argv: list[str]) -> tuple[list[list[str]], bool]:
    """The override list of every job the command would launch, and whether it is a multirun.

    Uses the basic sweeper's expansion (cartesian product of comma-separated
    values, ``hydra.sweeper.params`` included), after checking each sweep's values
    against the sweep as written (:func:`check_sweep`); other sweepers are checked on
    their base config only. Override forms that leave a job without a key it reads
    are refused first (:func:`check_forms`).
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = _parse(argv)
    overrides = list(args.overrides)
    check_no_targets(overrides)
    # with the config loader, glob(*) over a config group expands to its options, as under Hydra itself
    loader = GlobalHydra.instance().config_loader()
    parser = OverridesParser.create(config_loader=loader)
    parsed = parse_each(parser, overrides)
    check_forms(parsed, loader.repository)
    for o in parsed:
        if o.is_sweep_override() and o.is_hydra_override():  # Hydra's own ConfigCompositionException, as one line
            key, value = o.input_line.split("=", 1)
            param = key.lstrip("+~").removeprefix("hydra.sweeper.params.")
            raise ConfigError(f"{o.input_line}: Hydra cannot sweep its own config"
                              + (f"; to set the values of {param} write {param}={value}" if param != key.lstrip("+~")
                                 else "; give it one value"))
    if not args.multirun:
        for o in parsed:
            if o.is_sweep_override():
                raise ConfigError(f"{o.input_line} is a sweep; add -m to run every value")
        return [overrides], False
    for o in parsed:
        key = o.get_key_element().lstrip("+~")
        if o.is_sweep_override() and key in UNSWEPT:
            raise ConfigError(f"{o.get_key_element()} cannot be swept: one sweep records into one store and experiment; "
                              "run one sweep per value")
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    base = _compose(fixed, with_hydra=True)
    n_jobs = base.hydra.launcher.get("n_jobs")
    if isinstance(n_jobs, int) and (n_jobs == 0 or n_jobs < -1):
        raise ConfigError(f"hydra.launcher.n_jobs={n_jobs} must be a number of workers >= 1, or -1 for one per core")
    sweeper = str(base.hydra.sweeper.get("_target_", ""))
    if sweeper.endswith(".NnexpOptunaSweeper"):  # a search: its settings, space and storage; jobs covering the space
        from .search import check_search

        return check_search(base, overrides, GlobalHydra.instance().config_loader()), True
    if "BasicSweeper" not in sweeper:
        return [fixed], True
    pack = base.hydra.sweeper.get("pack", True)
    if not isinstance(pack, bool):  # Hydra's config is untyped here: "maybe" would read as true
        raise ConfigError(f"hydra.sweeper.pack={pack!r} must be true or false (false: every job trains alone)")
    params = [f"{k}={v}" for k, v in (base.hydra.sweeper.get("params") or {}).items()]
    everything = parse_each(parser, params) + parsed
    reference = _reference_parser(loader)
    counts = {}  # the basic sweeper keeps a key's last override (seed=0,1 over hydra.sweeper.params' seed)
    for o in everything:
        if not o.is_sweep_override():
            counts.pop(o.get_key_element(), None)
            continue
        values = check_sweep(o, reference)
        key = o.get_key_element().lstrip("+~")
        counts[o.get_key_element()] = len(values)
        if not values:
            groups = config_groups()
            if key in groups:
                raise ConfigError(f"{o.input_line} matches no option of {key}; choose from: {', '.join(groups[key])}")
            if "glob(" not in o.input_line:
                raise ConfigError(f"{o.input_line} has no values; give it at least one "
                                  "(range(start,stop,step) stops before stop and steps towards it)")
            raise ConfigError(f"{o.input_line} has no values; glob() selects options of a config group "
                              f"({', '.join(groups)}), e.g. activation='glob(*)'")
    n = math.prod(counts.values())
    if n > MAX_JOBS:
        raise ConfigError(f"{' '.join(o.input_line for o in parsed if o.is_sweep_override())}: {n:,} jobs; "
                          f"one command launches at most {MAX_JOBS:,}")
    jobs = BasicSweeper.split_arguments(everything, None)[0]
    return [list(j) for j in jobs], True


def _covering(jobs: list[list[str]]) -> list[list[str]]:
    """A subset of jobs in which every override value appears at least once."""
    seen: set[str] = set()
    keep = []
    for j in jobs:
        if any(o not in seen for o in j):
            keep.append(j)
            seen.update(j)
    return keep


def preflight(argv: list[str]) -> int:
    """Compose and validate every job of ``argv``; return the number of jobs.

    Raises
    ------
    ConfigError
        For the first job whose config is invalid, with a one-line message.
    """
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from .app import check_data
    from .studies import config_dir_overrides
    from .tracking import check_store, deleted_experiment, deleted_experiment_message, resolve_uri

    argv = config_dir_overrides(argv)  # --config-dir as hydra.searchpath: the compose API reads only the latter
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="nnexp.conf", version_base="1.3"):
            try:
                jobs, multirun = expand_jobs(argv)
            except (HydraException, OmegaConfBaseException) as e:
                raise ConfigError(_one_line(e, _parse(argv).overrides)) from None
            except yaml.MarkedYAMLError as e:  # a config file (a study's, or one under --config-dir) is not YAML
                raise ConfigError(_yaml_line(e)) from None
            todo = jobs if len(jobs) <= FULL_CHECK_LIMIT else _covering(jobs)
            checked_data: set[str] = set()
            uris: set[str] = set()
            compose_job = JobComposer()
            for job in todo:
                try:
                    cfg = compose_job(job)
                    OmegaConf.to_container(cfg, resolve=True)  # ${oc.env:UNSET} in a value fails here, not in the job
                    validate(cfg)
                    key = OmegaConf.to_yaml(cfg.dataset) + cfg.model.loss + cfg.model.dtype
                    if key not in checked_data:
                        check_data(cfg, Path.cwd())
                        checked_data.add(key)
                except (HydraException, OmegaConfBaseException) as e:
                    raise ConfigError(_one_line(e, job)) from None
                uris.add((resolve_uri(cfg.tracking.uri, Path.cwd()), cfg.tracking.experiment))
            for uri, experiment in sorted(uris):
                check_store(uri)
                if (exp_id := deleted_experiment(uri, experiment)) is not None:  # never revived silently
                    raise ConfigError(deleted_experiment_message(experiment, exp_id))
    finally:
        GlobalHydra.instance().clear()
    CHECKED.append(list(argv))
    return len(jobs)
