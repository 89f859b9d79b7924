"""Property-based bad input: malformed configs and dataset files raise ConfigError/DatasetError
(one line) and never any other exception type; the CLI answers them with exit 2 and one line.

The config and dataset properties stay here with the CLI one (rather than in test_config.py and
test_dataset.py): the last test checks the example counts of both, in file order."""

from __future__ import annotations

import contextlib
import copy
import math
import tempfile
from pathlib import Path

import h5py
import numpy as np
import yaml
from helpers import DEBUG
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffpolicy import cli
from diffpolicy.config import Config, apply_override, config_from_dict, load_config
from diffpolicy.dataset import Demos, load_demos, make_windows, summarize
from diffpolicy.errors import ConfigError, DatasetError

BASE = yaml.safe_load(DEBUG.read_text())
SECTIONS = {name: sorted(Config().__getattribute__(name).__dict__) for name in
            ("data", "model", "policy", "train", "eval")}  # fmt: skip
FAST = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.binary(max_size=8),
    st.lists(st.one_of(st.integers(-5, 300), st.floats(), st.text(max_size=3)), max_size=4),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


@st.composite
def malformed_config(draw):
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["value", "value", "unknown", "section", "horizons", "top"]))
        section = draw(st.sampled_from(sorted(SECTIONS)))
        if not isinstance(data.get(section, {}), dict):
            data[section] = {}
        if kind == "value":
            key = draw(st.sampled_from(SECTIONS[section]))
            data.setdefault(section, {})[key] = draw(junk)
        elif kind == "unknown":
            data.setdefault(section, {})[draw(st.text(min_size=1, max_size=8))] = draw(junk)
        elif kind == "section":
            data[section] = draw(junk)
        elif kind == "horizons":  # inconsistent To / Tp / Ta
            d = data.setdefault("data", {}) if isinstance(data.get("data"), dict) else {}
            data["data"] = d
            d["n_obs_steps"] = draw(st.integers(-2, 20))
            d["horizon"] = draw(st.integers(-4, 40))
            c = data.setdefault("control", {}) if isinstance(data.get("control"), dict) else {}
            data["control"] = c
            c["n_action_steps"] = draw(st.integers(-2, 40))
        else:
            data[draw(st.sampled_from(["dims", "env_id", "nonsense", 3]))] = draw(junk)
    return data


COUNTS = {"configs": 0, "config_files": 0, "datasets": 0}


@FAST
@given(malformed_config())
def test_malformed_configs_raise_only_config_error(data):
    COUNTS["configs"] += 1
    try:
        cfg = config_from_dict(data)
    except ConfigError as e:
        msg = str(e)
        assert msg and "\n" not in msg
        return
    # accepted: then it really is valid (horizons consistent, numbers finite)
    d = cfg.data
    assert 1 <= cfg.control.n_action_steps <= d.horizon - d.n_obs_steps + 1
    assert math.isfinite(cfg.train.lr) and cfg.train.lr > 0


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode),
       st.lists(st.text(max_size=20), max_size=3))  # fmt: skip
def test_arbitrary_config_files_and_overrides(raw, overrides):
    COUNTS["config_files"] += 1
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.yaml"
        path.write_bytes(raw)
        try:
            load_config(path, overrides)
        except ConfigError as e:
            assert "\n" not in str(e)
    data: dict = {}
    for o in overrides:
        with contextlib.suppress(ConfigError):
            apply_override(data, o)


# ---------------------------------------------------------------------------------- datasets

DTYPES = ["f4", "f8", "f2", "i4", "u1", "?", "c8", "S3", "vlen", "compound"]


def _array(draw, shape):
    dtype = draw(st.sampled_from(DTYPES + ["f4"] * 6))
    if dtype == "vlen":
        return np.array([b"\x80\x04payload"] * (shape[0] if shape else 1), dtype=object)
    if dtype == "compound":
        return np.zeros(shape, dtype=[("a", "f4"), ("b", "i4")])
    x = np.zeros(shape, dtype=dtype)
    if x.dtype.kind == "f" and x.size:
        bad = draw(st.sampled_from([None, None, np.nan, np.inf, -np.inf, 1e300]))
        if bad is not None:
            with np.errstate(over="ignore"):
                x.flat[draw(st.integers(0, x.size - 1))] = bad
    return x


@st.composite
def malformed_file(draw):
    """A recipe: (list of (path, array or 'group'), list of (group path, attr, value))."""
    items, attrs = [], []
    top = draw(st.sampled_from(["data", "data", "data", "Data", "none"]))
    n_eps = draw(st.integers(0, 3))
    for i in range(n_eps):
        g = f"{top}/{draw(st.sampled_from([f'demo_{i}', f'demo_{i}', 'demo_x', 'other']))}"
        T = draw(st.sampled_from([0, 1, 3, 4]))
        A = draw(st.sampled_from([0, 2, 2, 3]))
        if draw(st.integers(0, 9)):
            shape = draw(st.sampled_from([(T, A), (T, A), (T,), (), (T, A, 1)]))
            items.append((f"{g}/actions", _array(draw, shape)))
        obs_kind = draw(st.sampled_from(["ok", "ok", "ok", "missing", "dataset", "empty"]))
        if obs_kind == "dataset":
            items.append((f"{g}/obs", np.zeros(T)))
        elif obs_kind == "empty":
            items.append((f"{g}/obs", "group"))
        elif obs_kind == "ok":
            for key in draw(st.sets(st.sampled_from(["observation", "desired_goal", "pixels"]),
                                    min_size=1)):  # fmt: skip
                Tk = draw(st.sampled_from([T, T, T, T + 1, 0]))
                D = draw(st.sampled_from([2, 2, 0, 5]))
                items.append((f"{g}/obs/{key}", _array(draw, (Tk, D))))
        for key in ("rewards", "dones"):
            if draw(st.booleans()):
                items.append(
                    (f"{g}/{key}", _array(draw, draw(st.sampled_from([(T,), (T, 2), ()]))))
                )
        for attr in ("mode", "seed", "mode_name", "instruction", "num_samples"):
            if draw(st.integers(0, 3)) == 0:
                attrs.append((g, attr, draw(attr_values)))
    for attr in ("env_args", "mode_names", "layout", "total"):
        if draw(st.booleans()):
            attrs.append((top, attr, draw(attr_values)))
    return items, attrs


attr_values = st.one_of(
    st.integers(-(2**40), 2**40),
    st.floats(),
    st.text(max_size=10),
    st.sampled_from(['{"env_name": 3}', "[1, 2]", "{", '["a", {"b": 1}]', "null", "NaN"]),
    st.just(np.void(b"\x80\x04\x95cos\nsystem\n")),  # a pickle blob: must stay opaque bytes
    st.just(np.arange(3)),
    st.just(np.bytes_(b"\xff\xfe")),
)


def build(path: Path, recipe) -> None:
    items, attrs = recipe
    with h5py.File(path, "w") as f:
        for name, value in items:
            try:
                if isinstance(value, str):
                    f.require_group(name)
                elif value.dtype == object:
                    f.create_dataset(name, data=value, dtype=h5py.special_dtype(vlen=bytes))
                else:
                    f.create_dataset(name, data=value)
            except (ValueError, TypeError, KeyError):
                pass  # the recipe collides with itself (a dataset where a group is): skip it
        for group, key, value in attrs:
            if group in f:  # (HDF5 cannot store a NUL inside a string: such attrs are skipped)
                with contextlib.suppress(ValueError):
                    f[group].attrs[key] = value


@FAST
@given(malformed_file(), st.sampled_from([None, ("observation",), ("observation", "desired_goal")]))
def test_malformed_datasets_raise_only_dataset_error(recipe, obs_keys):
    COUNTS["datasets"] += 1
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.hdf5"
        build(path, recipe)
        try:
            demos = load_demos(path, obs_keys=obs_keys)
        except DatasetError as e:
            assert str(e) and "\n" not in str(e)
            return
        # accepted: everything downstream works on it
        assert isinstance(demos, Demos) and demos.episodes
        for ep in demos.episodes:
            assert len(ep) >= 1 and ep.actions.shape[1] >= 1
            assert np.isfinite(ep.actions).all()
            assert all(np.isfinite(v).all() and v.shape[0] == len(ep) for v in ep.obs.values())
        summarize(demos)
        keys = tuple(demos.episodes[0].obs)
        w = make_windows(demos, np.arange(len(demos.episodes)), keys, None, 2, 4)
        assert np.isfinite(w["obs"]).all() and np.isfinite(w["action"]).all()


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(malformed_file())
def test_cli_info_on_malformed_files_exits_0_or_2_with_one_line(recipe):
    import contextlib
    import io

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.hdf5"
        build(path, recipe)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(["info", str(path)])
        assert code in (0, 2)
        if code == 2:
            lines = err.getvalue().strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("diffpolicy info: error:"), lines


def test_at_least_200_of_each_were_tried():
    """Runs after the properties above (file order): the counts are real, not configured."""
    if COUNTS["configs"] or COUNTS["datasets"]:
        assert COUNTS["configs"] >= 200 and COUNTS["datasets"] >= 200, COUNTS


# ------------------------------------------------------------------- every subcommand, fuzzed
# Seeded command lines for every subcommand (tests/faults.py: Fuzzer -- unknown flags, wrong
# types, missing and extra positionals, foreign files of each kind, unusable output paths,
# junk overrides) through the real entry point: exit 0, or exit 2 with one line, never a
# traceback or a hang. benchmarks/reliability.py runs >= 2,000 of them.

import pytest  # noqa: E402

FUZZ_SEED, FUZZ_LINES = 1234, 200
ALLOWED = ("ok", "error", "interrupted")


@pytest.fixture(scope="module")
def fuzz_world(tmp_path_factory, toy_run):
    from faults import MountUnavailable, World, mount_tmpfs, umount
    from helpers import debug_cfg, write_bimodal

    from diffpolicy.collect import collect
    from diffpolicy.train import train

    d = tmp_path_factory.mktemp("fuzz")
    collect("diffpolicy/ReachAround-v0", 2, str(d / "reach.hdf5"), progress=False)
    run = train(debug_cfg(d / "reach.hdf5", "train.steps=2"), d / "reachrun", progress=False)
    ro = d / "ro"
    try:
        mount_tmpfs(ro, "size=1m,ro")
    except MountUnavailable:
        ro = None
    world = World(d / "world", run, toy_run, d / "reach.hdf5", write_bimodal(d / "toy.hdf5"), ro)
    yield world
    if ro is not None:
        umount(ro)


def test_generated_command_lines_exit_0_or_2_with_one_line(fuzz_world, monkeypatch):
    from collections import Counter

    from faults import Fuzzer, run_main, stub_expensive_work

    stub_expensive_work(monkeypatch)  # valid quickstart / modes / bench lines: minutes of work
    monkeypatch.chdir(fuzz_world.cwd)  # default output paths land in the world
    lines = Fuzzer(fuzz_world, FUZZ_SEED, expensive=False).lines(FUZZ_LINES)
    outcomes = [run_main(argv, timeout=60) for argv in lines]
    bad = [o for o in outcomes if o.verdict not in ALLOWED]
    assert not bad, "\n\n".join(o.describe() for o in bad[:5])
    counts = Counter(o.verdict for o in outcomes)
    assert counts["error"] >= FUZZ_LINES // 2 and counts["ok"] >= 10, counts  # both were tried
    tried = {o.argv[0] for o in outcomes if o.argv}
    assert {"collect", "info", "train", "distill", "eval", "quickstart", "modes", "bench"} <= tried
    assert tried - set(Fuzzer.COMMANDS) and any(not o.argv for o in outcomes)  # and unknown/none
    assert not fuzz_world.pwned.exists()  # a pickled train_state.pt was never unpickled
    assert fuzz_world.replaced_special_files() == []  # no output renamed over a device or FIFO


def test_generated_command_lines_through_the_real_entry_point(fuzz_world, monkeypatch):
    """A handful of the generated lines (one per kind of command, refused and accepted) in new
    interpreters, at once: the same exit code and the same one line as in-process."""
    import subprocess
    import sys

    from faults import Fuzzer, Outcome, run_main
    from helpers import CLI_ENV

    monkeypatch.chdir(fuzz_world.cwd)
    picked: dict[tuple[str, str], Outcome] = {}
    for argv in Fuzzer(fuzz_world, FUZZ_SEED + 1, expensive=False).lines(300):
        name = argv[0] if argv else ""
        if name in ("quickstart", "modes", "bench", "distill"):
            continue  # not stubbed in a new interpreter
        o = run_main(argv, timeout=60)
        key = (name if name in ("collect", "info", "train", "eval", "") else "other", o.verdict)
        wanted = key[1] == "error" or (key[1] == "ok" and key[0] == "info")
        if wanted and key not in picked:
            picked[key] = o
        if len(picked) >= 6:
            break
    assert len(picked) >= 5, sorted(picked)
    procs = {
        key: subprocess.Popen([sys.executable, "-m", "diffpolicy", *o.argv], cwd=fuzz_world.cwd,
                              env=CLI_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, errors="replace")
        for key, o in picked.items()
    }  # fmt: skip
    for key, proc in procs.items():
        _, err = proc.communicate(timeout=120)
        real = Outcome(picked[key].argv, proc.returncode, err, 0.0)
        assert real.verdict in ALLOWED and real.code == picked[key].code, real.describe()
        if real.code == 2:
            assert real.lines == picked[key].lines, (real.lines, picked[key].lines)
