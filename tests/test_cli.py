# ruff: noqa: E501
"""The command line end to end (diffpolicy.cli): bad input answered with exit 2 and one line,
nothing written; `train --resume RUN key=value`; `eval` writing its JSON and report."""

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import DEBUG, ROOT, debug_cfg, one_line_exit_2, run_cli, write_bimodal

from diffpolicy.checkpoint import checkpoint_dirs
from diffpolicy.config import load_config
from diffpolicy.train import train


def test_config_errors_exit_2_with_one_line(tmp_path, toy_demo_file):
    r = run_cli(
        "train", str(DEBUG), "--dataset", toy_demo_file, "--out", str(tmp_path / "r"), "train.lrr=1"
    )
    assert r.returncode == 2 and "did you mean 'train.lr'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = run_cli("train", str(DEBUG), "--dataset", str(tmp_path / "missing.hdf5"))
    assert r.returncode == 2 and "not found" in r.stderr
    assert not (tmp_path / "r").exists()


def test_resume_takes_key_value_overrides(tmp_path, toy_demo_file):
    """`train --resume RUN train.steps=N` extends a finished run (the override is not a CONFIG)."""
    run = train(debug_cfg(toy_demo_file, "train.steps=10"), tmp_path / "run", progress=False)
    r = run_cli("train", "--resume", str(run), "train.steps=20")
    assert r.returncode == 0, r.stderr
    assert checkpoint_dirs(run)[-1].name == "step_00000020"
    assert load_config(run / "config.yaml").train.steps == 20


@pytest.mark.parametrize(
    "argv, message",
    [
        (["collect", "diffpolicy/Nope-v0", "--episodes", "2", "--out", "OUT"], "unknown env id"),
        (["collect", "ReachAround", "--episodes", "2", "--out", "OUT"], "unknown env id"),
        (["collect", "diffpolicy/ReachAround-v0", "--episodes", "two", "--out", "OUT"],
         "'two' is not an integer"),
        (["collect", "diffpolicy/ReachAround-v0", "--episodes", "-3", "--out", "OUT"], ">= 0"),
        (["collect", "diffpolicy/ReachAround-v0", "--episodes", "2", "--out", "OUT",
          "--workers", "0"], "must be >= 1"),
        (["collect", "diffpolicy/ReachAround-v0", "--episodes", "1e3", "--out", "OUT"],
         "not an integer"),
        (["eval", "RUN", "--episodes", "2", "--guidance", "nan"], "must be finite"),
        (["eval", "RUN", "--episodes", "2", "--guidance", "abc"], "is not a number"),
        (["eval", "RUN", "--episodes", "2", "--mode", "left"], "must be an integer or 'all'"),
        (["eval", "RUN", "--episodes", "2", "--envs", "0"], "must be >= 1"),
        (["train", "CFG", "--dataset", "DATA", "--out", "OUT", "train.steps=abc"],
         "train.steps='abc' must be an integer"),
        (["train", "CFG", "--dataset", "DATA", "--out", "OUT", "train.lr=-1"],
         "train.lr=-1.0 must be a positive number"),
        (["train", "CFG", "--dataset", "DATA", "--out", "OUT", "data.horizon=13"],
         "data.horizon=13 must be a positive multiple"),
        (["train", "CFG", "--dataset", "DATA", "--out", "OUT", "control.n_action_steps=9"],
         "control.n_action_steps=9 must be <="),
        (["train", "CFG", "--dataset", "DATA", "--out", "OUT", "data.obs_keys=[pixels]"],
         "no key 'pixels'"),
        (["train", "CFG", "--dataset", "DATA", "--out", "OUT", "data.goal_key=nope"],
         "no key 'nope'"),
        (["train", "CFG", "--dataset", "DATA", "--out", "OUT", "train.device=tpu"],
         "train.device='tpu' must be one of"),
        (["train", "CFG", "--dataset", "DATA", "--out", "OUT", "nonsense"], "unrecognized arguments"),
        (["train", "CFG", "--dataset", "NOTHDF5", "--out", "OUT"], "is not an HDF5 file"),
        (["info", "NOTHDF5"], "is not an HDF5 file"),
    ],
)  # fmt: skip
def test_cli_bad_input_exit_2_one_line_nothing_written(argv, message, toy_run, tmp_path, capsys):
    (tmp_path / "not.hdf5").write_text("plain text")
    data = write_bimodal(tmp_path / "toy.hdf5")
    subst = {"RUN": str(toy_run), "CFG": str(DEBUG), "DATA": data,
             "OUT": str(tmp_path / "out"), "NOTHDF5": str(tmp_path / "not.hdf5")}  # fmt: skip
    before = sorted(p.name for p in tmp_path.iterdir())
    one_line_exit_2(capsys, [subst.get(a, a) for a in argv], message)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_broken_dataset_files_refused_by_info_and_train(tmp_path, capsys):
    def build(name, fn):
        path = tmp_path / name
        with h5py.File(path, "w") as f:
            fn(f)
        return str(path)

    def ep(f, T=4, obs=None, actions=None, i=0):
        f.create_dataset(
            f"data/demo_{i}/actions", data=np.zeros((T, 2)) if actions is None else actions
        )
        f.create_dataset(
            f"data/demo_{i}/obs/observation", data=np.zeros((T, 2)) if obs is None else obs
        )
        f.create_dataset(f"data/demo_{i}/obs/desired_goal", data=np.zeros((T, 2)))

    good = write_bimodal(tmp_path / "good.hdf5", n=4)
    raw = Path(good).read_bytes()
    (tmp_path / "trunc.hdf5").write_bytes(raw[: len(raw) // 3])
    files = {
        "missing": (str(tmp_path / "missing.hdf5"), "not found"),
        "truncated": (str(tmp_path / "trunc.hdf5"), "trunc.hdf5"),
        "no_data": (build("a.h5", lambda f: f.create_group("x")), "no 'data' group"),
        "no_actions": (build("b.h5", lambda f: f.create_group("data/demo_0/obs")), "no 'actions'"),
        "zero_len": (build("c.h5", lambda f: ep(f, T=0)), "zero length"),
        "inf": (build("d.h5", lambda f: ep(f, obs=np.full((4, 2), np.inf))), "NaN or inf"),
        "f64_overflow": (build("e.h5", lambda f: ep(f, actions=np.full((4, 2), 1e300))), "NaN or inf"),
        "wrong_dtype": (build("g.h5", lambda f: ep(f, actions=np.zeros((4, 2), complex))), "dtype"),
        "obs_mismatch": (build("h.h5", lambda f: (ep(f), ep(f, obs=np.zeros((4, 3)), i=1))), "inconsistent"),
        "obs_is_dataset": (build("i.h5", lambda f: (f.create_dataset("data/demo_0/actions", data=np.zeros((3, 2))),
                                                    f.create_dataset("data/demo_0/obs", data=np.zeros(3)))),
                           "no 'obs' group"),
        "mode_huge": (build("j.h5", lambda f: (ep(f), f["data/demo_0"].attrs.__setitem__("mode", 10**12))),
                      "mode="),
    }  # fmt: skip
    for name, (path, message) in files.items():
        one_line_exit_2(capsys, ["info", path], message)
        out = tmp_path / f"run_{name}"
        one_line_exit_2(
            capsys, ["train", str(DEBUG), "--dataset", path, "--out", str(out)], message
        )
        assert not out.exists(), name
    assert Path(good).read_bytes() == raw


def test_eval_cli_rejects_bad_instructions_value(capsys):
    from diffpolicy.cli import main

    with pytest.raises(SystemExit) as e:
        main(["eval", "somewhere", "--instructions", "heldout"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


# ------------------------------------------------------- eval on a run trained on collected demos


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from diffpolicy.collect import collect

    d = tmp_path_factory.mktemp("run")
    collect("diffpolicy/ReachAround-v0", 6, str(d / "demos.hdf5"), workers=1, progress=False)
    cfg = load_config(ROOT / "configs" / "debug.yaml", ("train.steps=20",))
    cfg.data.dataset = str(d / "demos.hdf5")
    return train(cfg, d / "run", progress=False)


def test_eval_cli_writes_json_and_report(tiny_run, tmp_path):
    out = tmp_path / "eval.json"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "diffpolicy",
            "eval",
            str(tiny_run),
            "--episodes",
            "3",
            "--envs",
            "2",
            "--json",
            str(out),
            "--report",
            str(tmp_path / "rep"),
            "--action-steps",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    for key in (
        "episodes",
        "success_rate",
        "collision_rate",
        "mode_probs",
        "demo_mode_probs",
        "normalized_entropy",
        "tv_to_demos",
        "interpolation_rate",
        "mode_switch_rate",
        "commanded_mode_accuracy",
        "chunk_latency_ms",
        "success_rate_ci95",
    ):
        assert key in res, key
    assert res["episodes"] == 3 and len(res["records"]) == 3
    assert res["action_steps"] == 2  # Ta overridden at evaluation
    assert abs(sum(res["demo_mode_probs"]) - 1) < 1e-6
    for name in ("index.html", "paths.png", "modes.png", "metrics.json"):
        assert (tmp_path / "rep" / name).is_file(), name
    assert list((tmp_path / "rep" / "videos").glob("*.mp4"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "/nonexistent/run", "--episodes", "2"], "run directory not found"),
        (["eval", "RUN", "--episodes", "2", "--mode", "0"], "--mode needs a mode-conditioned run"),
        (
            ["eval", "RUN", "--episodes", "2", "--steps", "999"],
            "policy.num_inference_steps=999 must be in",
        ),
        (
            ["eval", "RUN", "--episodes", "2", "--action-steps", "99"],
            "control.n_action_steps=99 must be",
        ),
        (["eval", "RUN", "--episodes", "0"], "must be >= 1"),
        (
            ["collect", "diffpolicy/Nope-v0", "--episodes", "2", "--out", "/tmp/x.hdf5"],
            "unknown env id",
        ),
        (
            [
                "collect",
                "diffpolicy/ReachAround-v0",
                "--episodes",
                "2",
                "--out",
                "/tmp/x.hdf5",
                "--mode",
                "5",
            ],
            "--mode 5 out of range",
        ),
        (
            [
                "collect",
                "diffpolicy/ReachAround-v0",
                "--episodes",
                "2",
                "--out",
                "/nonexistent/dir/x.hdf5",
            ],
            "does not exist",
        ),
        (["info", "/nonexistent.hdf5"], "not found"),
    ],
)
def test_bad_input_one_line_exit_2(tiny_run, args, message):
    args = [str(tiny_run) if a == "RUN" else a for a in args]
    r = subprocess.run(
        [sys.executable, "-m", "diffpolicy", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert r.returncode == 2, (r.returncode, r.stderr[-1000:])
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], r.stderr


# ------------------------------------------------------------------------- oversize values


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "CFG", "--dataset", "DATA", "--out", "OUT", "data.horizon=1000000"],
         "data.horizon=1000000 is larger than the limit 1024"),
        (["train", "CFG", "--dataset", "DATA", "--out", "OUT", "model.down_dims=[1000000000000]"],
         "model.down_dims=[1000000000000]: entries must be <= 8192"),
        (["train", "CFG", "--dataset", "DATA", "--out", "OUT", "model.down_dims=[8,8,8,8,8,8,8,8,8]"],
         "model.down_dims has more than 8 levels"),
        (["train", "CFG", "--dataset", "DATA", "--out", "OUT", "train.batch_size=10000000000"],
         "train.batch_size=10000000000 is larger than the limit 1000000"),
        (["train", "CFG", "--dataset", "DATA", "--out", "OUT", "policy.num_train_timesteps=10**9"],
         "must be an integer"),
        (["train", "CFG", "--dataset", "DATA", "--out", "OUT", "policy.num_train_timesteps=1000000000"],
         "policy.num_train_timesteps=1000000000 is larger than the limit 10000"),
        (["train", "CFG", "--dataset", "DATA", "--out", "OUT", "train.steps=1000000000000"],
         "train.steps=1000000000000 is larger than the limit 100000000"),
        (["train", "--resume", "RUN", "data.horizon=1000000"],
         "data.horizon=1000000 is larger than the limit 1024"),
        (["distill", "RUN", "--out", "OUT", "model.down_dims=[1000000000000]"],
         "entries must be <= 8192"),
        (["quickstart", "--out", "OUT", "--episodes", "2", "data.horizon=1000000"],
         "data.horizon=1000000 is larger than the limit 1024"),
    ],
)  # fmt: skip
def test_oversize_values_refused_at_validation_naming_the_limit(
    argv, message, toy_run, tmp_path, capsys, monkeypatch
):
    """Refused before any data is read or memory allocated: in well under a second."""
    import shutil
    import time

    import diffpolicy.collect

    def work(*a, **kw):
        raise AssertionError("work started before the config was validated")

    monkeypatch.setattr(diffpolicy.collect, "collect", work)
    run = tmp_path / "run"
    shutil.copytree(toy_run, run)
    data = write_bimodal(tmp_path / "toy.hdf5")
    subst = {"RUN": str(run), "CFG": str(DEBUG), "DATA": data, "OUT": str(tmp_path / "out")}
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    t0 = time.perf_counter()
    one_line_exit_2(capsys, [subst.get(a, a) for a in argv], message)
    assert time.perf_counter() - t0 < 3
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


# ------------------------------------------------------------- found by benchmarks/reliability


def test_plot_path_without_an_image_extension(tmp_path, toy_demo_file, capsys):
    """`info --plot` to a path with no extension writes a PNG; with a non-image extension it is
    one line, exit 2, nothing written (it was a matplotlib traceback)."""
    from diffpolicy.cli import main

    assert main(["info", toy_demo_file, "--plot", str(tmp_path / "paths")]) == 0
    assert (tmp_path / "paths").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    one_line_exit_2(capsys, ["info", toy_demo_file, "--plot", str(tmp_path / "paths.json")],
                    "'.json' is not an image format")  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["paths", "toy.hdf5"]


@pytest.mark.parametrize("kind", ["mse", "gmm"])
def test_distill_into_another_policy_type_is_one_line(kind, tmp_path, toy_run, capsys):
    """A student of another type than its diffusion teacher (it was an AttributeError from the
    distillation loss after set-up)."""
    out = tmp_path / "student"
    one_line_exit_2(capsys, ["distill", str(toy_run), "--out", str(out), f"policy.type={kind}"],
                    f"a student is a diffusion policy like its teacher, not {kind}")  # fmt: skip
    assert not out.exists()
