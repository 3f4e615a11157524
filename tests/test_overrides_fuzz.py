"""Override fuzzer: command lines generated from the schema's keys, the config groups and Hydra's override grammar.

Each generated command either composes and validates (preflight returns its number of jobs) or ends in exit 2
with exactly one line on stderr that names a key of the command; never a traceback, never a store (no mlflow.db,
no mlruns). The commands go through ``nnexp.__main__.main`` in this process with Hydra's task function replaced,
so nothing trains: only the preflight that every command passes first runs.

Profiles (Hypothesis settings profiles): ``NNEXP_FUZZ=short`` (default, 100 commands and 50 sweeps, part of
``python -m pytest``, derandomized: the same commands on every run) and ``NNEXP_FUZZ=long`` (1,500 commands and
750 sweeps, random each time, run by .ci/run). Grammar:
https://hydra.cc/docs/advanced/override_grammar/basic/ and .../extended/.
"""

from __future__ import annotations

import contextlib
import decimal
import io
import math
import os
import string
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from nnexp.config import config_groups, register, schema_keys

register()

settings.register_profile("nnexp-fuzz-short", max_examples=100, deadline=None, database=None, print_blob=True,
                          derandomize=True,  # the README's test command: the same 100 commands every time
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("nnexp-fuzz-long", max_examples=1500, deadline=None, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PROFILE = settings.get_profile(f"nnexp-fuzz-{os.environ.get('NNEXP_FUZZ', 'short')}")

GROUPS = config_groups()
KEYS = schema_keys()
#: Hydra's own groups and keys a user may set.
HYDRA = {"hydra/launcher": ["basic", "joblib", "nnexp_ray", "submitit_local"], "hydra/sweeper": ["basic"]}
HYDRA_KEYS = ["hydra.launcher.n_jobs", "hydra.job.chdir", "hydra.sweeper.params.seed", "hydra.verbose"]

# ---- values --------------------------------------------------------------------------------------------------
ident = st.text(string.ascii_lowercase + "_", min_size=1, max_size=8)
ints = st.integers(-3, 300).map(str)
floats = st.sampled_from(["0.1", "0.01", "1e-3", "1.5", "-1.0", "0.0", "1e300", "nan", "inf", "-inf", "100.0"])
specials = st.sampled_from(["true", "false", "null", "''", '""', "'a b'", '"x,y"', "'[1]'", "'${seed}'", "${seed}",
                            "é", "'a=b'", "\\,", "'null'", "'3'", "${oc.env:NNEXP_FUZZ_UNSET}", "${nope}"])
lists = st.sampled_from(["[1,2]", "[]", "[8]", "[4,4]", "[a]", "[1,null]", "[1.5]", "[[1]]", "[0]", "[2,3,4]"])
dicts = st.sampled_from(["{a:1}", "{name:relu}", "{}", "{lr:0.1}", "{uri:null}", "{hidden_sizes:[2]}"])
uris = st.sampled_from(["sqlite:///fuzz.db", "sqlite:///no/such/dir/x.db", "http://127.0.0.1:9", "foo://bar",
                        "/plain/path", "null"])
scalar = st.one_of(ints, floats, specials, ident)
element = st.one_of(scalar, scalar, lists, dicts)


def _ranges() -> st.SearchStrategy[str]:
    nums = st.one_of(st.integers(-2, 8).map(str), st.sampled_from(["0.5", "0.1", "0.25", "1.0"]))
    return st.builds(lambda a, b, s: f"range({a},{b}" + (f",{s})" if s else ")"), nums, nums,
                     st.one_of(st.none(), st.sampled_from(["1", "2", "-1", "-2", "0", "0.5", "3"])))


def sweeps(values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Hydra's sweep forms over ``values``: a comma list and every sweep function."""
    many = st.lists(values, min_size=2, max_size=3).map(",".join)
    base = st.one_of(many, _ranges(), st.lists(values, min_size=1, max_size=3).map(lambda v: f"choice({','.join(v)})"))
    return st.one_of(
        base,
        st.builds(lambda b, r: f"sort({b}" + (",reverse=true)" if r else ")"), base, st.booleans()),
        base.map(lambda b: f"shuffle({b})"),
        st.builds(lambda t, b: f"tag({t},{b})", ident, base),
        st.builds(lambda c, b: f"{c}({b})", st.sampled_from(["int", "float", "str", "bool"]), base),
        st.sampled_from(["interval(0.1,1)", "tag(a,interval(1,5))", "glob(*)", "glob(s*)", "glob(*,exclude=relu)"]),
    )


# ---- keys ----------------------------------------------------------------------------------------------------
def _typo(word: str) -> st.SearchStrategy[str]:
    """``word`` with one letter dropped, doubled or swapped with the next."""
    i = st.integers(0, max(0, len(word) - 2))
    return st.one_of(i.map(lambda k: word[:k] + word[k + 1:]), i.map(lambda k: word[:k] + word[k] + word[k:]),
                     i.map(lambda k: word[:k] + word[k + 1:k + 2] + word[k] + word[k + 2:]))


keys = st.one_of(st.sampled_from(KEYS), st.sampled_from(KEYS).flatmap(_typo), st.sampled_from(HYDRA_KEYS),
                 ident, st.sampled_from(["model._target_", "", "activation@foo", "init@activation", "activation@_global_"]))
group_names = st.sampled_from([*GROUPS, *HYDRA])


def _options(group: str) -> st.SearchStrategy[str]:
    options = GROUPS.get(group) or HYDRA.get(group, [])
    return st.one_of(st.sampled_from(options), st.sampled_from(options).flatmap(_typo), ident, st.just("null"))


@st.composite
def overrides(draw) -> str:
    """One override in any form Hydra's grammar has."""
    prefix = draw(st.sampled_from(["", "", "", "+", "++", "~"]))
    if draw(st.booleans()):  # a config group
        group = draw(group_names)
        options = _options(group)
        value = draw(st.one_of(options, sweeps(options), dicts))
        if prefix == "~" and draw(st.booleans()):
            return f"~{group}"
        return f"{prefix}{group}={value}"
    key = draw(keys)
    if key == "tracking.uri":
        value = draw(uris)
    else:
        value = draw(st.one_of(element, sweeps(scalar)))
    if prefix == "~" and draw(st.booleans()):
        return f"~{key}"
    return f"{prefix}{key}={value}"


#: Values each key accepts: most commands a user types are right, and the fuzzer should compose them too.
GOOD = {
    "epochs": ["1", "2", "3"], "batch_size": ["null", "2", "4"], "seed": ["0", "1", "7"], "replicas": ["1", "2"],
    "divergence_threshold": ["100.0", "1e4"], "blas_threads": ["null", "1"], "study": ["null", "mine"],
    "optimizer.lr": ["0.1", "0.01", "1e-3"], "optimizer.weight_decay": ["0.0", "1e-4"],
    "optimizer.schedule": ["constant", "step", "cosine"], "optimizer.step_size": ["10"], "optimizer.gamma": ["0.5"],
    "model.hidden_sizes": ["[2]", "[4,4]", "[8]"], "model.loss": ["auto", "mse", "binary_cross_entropy"],
    "model.dtype": ["float32", "float64"], "dataset.split_seed": ["0", "3"], "dataset.standardize": ["true", "false"],
    "tracking.experiment": ["fuzz", "'my study'"], "tracking.log_every": ["null", "1"],
    "tracking.diagnostics": ["true", "false"], "tracking.resume": ["false"], "tracking.report": ["false"],
    "tracking.uri": ["sqlite:///fuzz.db"], "init.bias": ["zeros"],
}


@st.composite
def good_overrides(draw, multirun: bool) -> str:
    """An override a user would type and that should compose: an option of a group, a value of a key, a sweep."""
    if draw(st.booleans()):
        group = draw(st.sampled_from(["activation", "init", "optimizer", "dataset", "hydra/launcher"]))
        options = [o for o in (GROUPS.get(group) or HYDRA[group]) if o not in ("csv", "nnexp_ray", "submitit_local")]
        values = draw(st.lists(st.sampled_from(options), min_size=1, max_size=2 if multirun else 1, unique=True))
        return f"{group}={','.join(values)}"
    key = draw(st.sampled_from(sorted(GOOD)))
    values = draw(st.lists(st.sampled_from(GOOD[key]), min_size=1, max_size=2 if multirun else 1, unique=True))
    if multirun and key not in ("tracking.experiment", "tracking.uri") and len(values) > 1:
        form = draw(st.sampled_from(["{}", "sort({})", "shuffle({})", "sort({},reverse=true)", "choice({})"]))
        return f"{key}={form.format(','.join(values))}"
    return f"{draw(st.sampled_from(['', '', '++']))}{key}={values[0]}"


@st.composite
def commands(draw) -> list[str]:
    """A command line: maybe ``-m``, XOR and one epoch unless overridden, 1-4 overrides, most of them right."""
    multirun = draw(st.booleans())
    seeds = ["seed=0"] if multirun and draw(st.booleans()) else []
    one = st.one_of(good_overrides(multirun), good_overrides(multirun), overrides())
    return [*(["-m"] if multirun else []), "dataset=xor", "epochs=1", *seeds,
            *draw(st.lists(one, min_size=1, max_size=4))]


def _keys_of(argv: list[str]) -> list[str]:
    """The keys a command names (``+model.loss=mse`` -> ``model.loss``, ``model``), both spellings of a group."""
    out = []
    for a in argv:
        if a.startswith("-"):
            continue
        k = a.partition("=")[0].lstrip("+~").split("@")[0]
        if k.startswith("hydra.sweeper.params."):  # the sweep sets that key of the job: its error names it
            out.append(k.removeprefix("hydra.sweeper.params."))
        parts = k.split(".")  # an unknown section is named alone: ++nit.std=0 -> "nit is not a key"
        out += [k, k.replace("/", "."), *(".".join(parts[:i]) for i in range(1, len(parts)))] if k else []
    return out


@pytest.fixture(scope="module")
def launch_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _run(argv: list[str], cwd: Path) -> tuple[int, str, list[list[str]]]:
    """``main(argv)`` in ``cwd`` with Hydra's task function replaced: (exit code, stderr, jobs handed to Hydra)."""
    import nnexp.__main__ as cli

    handed = []
    err = io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stderr(err), \
            mock.patch.object(cli, "hydra_main", lambda: handed.append(list(cli.sys.argv[1:]))), \
            mock.patch.object(cli.sys, "argv", ["nnexp"]):
        rc = cli.main(argv)
    return rc, err.getvalue(), handed


def _no_store(cwd: Path) -> bool:
    return not any((cwd / name).exists() for name in ("mlflow.db", "mlruns", "mlartifacts", "fuzz.db", "multirun",
                                                      "outputs"))


@settings(PROFILE)
@given(argv=commands())
def test_every_command_validates_or_is_one_line_naming_a_key(argv, launch_dir):
    rc, err, handed = _run(argv, launch_dir)
    event("validates" if rc == 0 else "refused")
    assert _no_store(launch_dir), argv
    if rc == 0:
        assert err == "" and handed == [argv]
        return
    assert rc == 2, (argv, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nnexp: error: "), err
    assert any(k in lines[0] for k in _keys_of(argv)), (argv, lines[0])
    assert "Traceback" not in err and not handed


# ---- sweep functions run exactly the values written ----------------------------------------------------------
def _as_written(start, stop, step) -> list:
    if all(isinstance(v, int) for v in (start, stop, step)):
        return list(range(start, stop, step))
    d0, d1, ds = (decimal.Decimal(str(v)) for v in (start, stop, step))
    return [float(d0 + i * ds) for i in range(max(0, math.ceil((d1 - d0) / ds)))]


@st.composite
def written_sweeps(draw) -> tuple[str, str, list, bool]:
    """``(key, sweep text, the values it says in its order, whether the order is free)`` for int and float keys."""
    key = draw(st.sampled_from(["seed", "epochs", "optimizer.lr"]))
    if key == "optimizer.lr":
        start, step = draw(st.sampled_from([0.1, 0.05, 0.25, 0.01])), draw(st.sampled_from([0.1, 0.05, 0.25, 0.2]))
        stop = draw(st.sampled_from([0.3, 0.5, 0.9, 1.0]))
    else:
        start, stop = draw(st.integers(1, 9)), draw(st.integers(1, 12))
        step = draw(st.sampled_from([1, 2, 3, -1, -2, -3]))
    values = _as_written(start, stop, step)
    text = f"range({start},{stop},{step})"
    form = draw(st.sampled_from(["range", "sort", "sort_reverse", "shuffle", "list", "sort_list"]))
    if form == "sort":
        return key, f"sort({text})", sorted(values), False
    if form == "sort_reverse":
        return key, f"sort({text},reverse=true)", sorted(values, reverse=True), False
    if form == "shuffle":
        return key, f"shuffle({text})", sorted(values), True
    if form == "list" and values:
        return key, ",".join(map(str, values)), values, False
    if form == "sort_list" and len(values) > 1:
        return key, f"sort({','.join(map(str, values))},reverse=true)", sorted(values, reverse=True), False
    return key, text, values, False


@settings(PROFILE, max_examples=max(50, PROFILE.max_examples // 2))  # one key, one sweep: fewer shapes to cover
@given(case=written_sweeps())
def test_sweep_functions_run_the_values_written_or_are_refused(case, launch_dir):
    """The jobs the basic sweeper would launch hold each value the sweep says, in its order; or the command is refused
    naming the key (an independent expansion: Python's range and sorted, decimal steps)."""
    from hydra import initialize_config_module

    from nnexp.config import ConfigError
    from nnexp.preflight import expand_jobs

    key, text, written, free_order = case
    argv = ["-m", "dataset=xor", "epochs=1", "seed=0", f"{key}={text}"]
    with initialize_config_module(config_module="nnexp.conf", version_base="1.3"):
        try:
            jobs, _ = expand_jobs(argv)
        except ConfigError as e:  # refused: one line naming the key
            assert "\n" not in str(e) and f"{key}=" in str(e), str(e)
            return
    assert written, (text, jobs)  # an empty sweep is refused
    ran = [type(written[0])(o.split("=", 1)[1]) for j in jobs for o in j if o.startswith(f"{key}=")]
    assert (sorted(ran) if free_order else ran) == written, (text, ran)


# ---- the real command line -------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,rc,says", [
    (["--cfg", "job", "dataset=xor", "++model.loss=mse", "tracking.experiment='my study'", "~experiment",
      "hydra/launcher=joblib"], 0, "loss: mse"),
    (["-m", "dataset=xor", "+activation@foo=relu,tanh"], 2, "+activation@foo=relu,tanh: nnexp reads activation"),
])
def test_real_command_lines(args, rc, says, tmp_path, cli):
    """Two commands as a shell runs them: --cfg job composes, validates and prints without training; a refusal is
    one line on stderr and exit 2. Neither leaves a store or a run folder."""
    proc = cli(args, tmp_path)
    assert proc.returncode == rc, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    if rc == 0:
        assert says in proc.stdout and "experiment: my study" in proc.stdout
    else:
        assert proc.stderr.count("\n") == 1 and says in proc.stderr, proc.stderr
    assert _no_store(tmp_path) and sorted(p.name for p in tmp_path.iterdir()) == []
