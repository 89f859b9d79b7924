"""Soak: 1,000 evaluation episodes in one process with faults injected, plus a bad-input sweep.

    python benchmarks/soak.py [--episodes 1000]          -> benchmarks/results/soak.json

A tiny run (configs/debug.yaml trained on a small collected ReachAround dataset) is rolled out
in chunks of `--chunk` episodes (each chunk builds and closes its own environments). Resident
memory (VmRSS from /proc/self/status) is read after every chunk; growth is measured from the
end of the first chunk (warm-up) to the end. Faults: a physics server disconnected mid-episode
and NaN policy outputs, at fixed intervals; each must end only its own episode. Then training
runs are SIGKILLed at random points and resumed, and malformed configs / datasets are fed to
the loaders; every refusal must be a ConfigError / DatasetError.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import os
import random
import signal
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pybullet
import torch
import yaml

from diffpolicy import rollout as ro
from diffpolicy.bench import CONFIGS, write_result
from diffpolicy.checkpoint import checkpoint_dirs, load_policy, load_run_config
from diffpolicy.collect import collect
from diffpolicy.config import config_from_dict, load_config, with_dataset
from diffpolicy.dataset import load_demos
from diffpolicy.errors import ConfigError, DatasetError
from diffpolicy.train import train

DEBUG = CONFIGS / "debug.yaml"


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def bullet_clients() -> int:
    return sum(pybullet.getConnectionInfo(physicsClientId=i)["isConnected"] for i in range(64))


def child_processes() -> list[int]:
    me, out = os.getpid(), []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                status = (d / "status").read_text()
            except OSError:
                continue
            ppid = int(next(ln for ln in status.splitlines() if ln.startswith("PPid:")).split()[1])
            if ppid == me:
                out.append(int(d.name))
    return out


def connected(env) -> bool:
    """Whether the env's physics server is still connected."""
    return bool(env.unwrapped.scene.client.getConnectionInfo()["isConnected"])


class FaultyPolicy(torch.nn.Module):
    """Wraps the trained policy: every `nan_every`-th call returns NaN for its first row;
    every `kill_every`-th call disconnects the physics server of one live env."""

    def __init__(self, policy, made, nan_every=23, kill_every=31):
        super().__init__()
        self.policy, self.made = policy, made
        self.nan_every, self.kill_every, self.calls = nan_every, kill_every, 0
        self.nan_injected = self.kills_injected = 0

    def predict_action_chunk(self, obs, sampling=None, **kw):
        self.calls += 1
        if self.calls % self.kill_every == 0:
            live = [e for e in self.made if connected(e)]
            if live:
                live[self.calls % len(live)].unwrapped.scene.client.disconnect()
                self.kills_injected += 1
        out = self.policy.predict_action_chunk(obs, sampling, **kw)
        if self.calls % self.nan_every == 0:
            out = out.clone()
            out[0] = float("nan")
            self.nan_injected += 1
        return out


def soak_eval(run: Path, episodes: int, chunk: int, n_envs: int) -> dict:
    policy, cfg = load_policy(run)
    real_make_env, made = ro.make_env, []

    def make_env(*a, **kw):
        env = real_make_env(*a, **kw)
        made.append(env)
        return env

    ro.make_env = make_env
    faulty = FaultyPolicy(policy, made)
    base_clients = bullet_clients()
    rss, records, t0 = [], [], time.perf_counter()
    try:
        for start in range(0, episodes, chunk):
            made.clear()
            recs, _ = ro.rollout(
                faulty, cfg, min(chunk, episodes - start), n_envs=n_envs,
                seed=10_000 + start, progress=False,
            )  # fmt: skip
            records += recs
            rss.append(rss_kib())
            print(f"  {len(records):5d} episodes  rss {rss[-1] / 1024:.1f} MiB", flush=True)
    finally:
        ro.make_env = real_make_env
    errors = [r.error for r in records if r.error]
    warm, end = rss[0], rss[-1]
    return {
        "episodes": len(records),
        "seconds": round(time.perf_counter() - t0, 1),
        "success_rate": float(np.mean([r.success for r in records])),
        "rss_kib_after_each_chunk": rss,
        "rss_warm_kib": warm,
        "rss_end_kib": end,
        "rss_growth_after_warmup": (end - warm) / warm,
        "faults": {
            "nan_actions_injected": faulty.nan_injected,
            "physics_disconnects_injected": faulty.kills_injected,
            "episodes_ended_by_nan": sum("non-finite" in e for e in errors),
            "episodes_ended_by_physics_failure": sum(e.startswith("env ") for e in errors),
            "evaluation_survived": len(records) == episodes,
        },
        "bullet_clients_leaked": bullet_clients() - base_clients,
        "child_processes_left": len(child_processes()),
        "multiprocessing_children_left": len(multiprocessing.active_children()),
    }


def kill_resume_sweep(dataset: str, tmp: Path, kills: int, rng: random.Random) -> dict:
    """SIGKILL a training child at random moments; every time the run dir must stay loadable."""
    run, survived = tmp / "killed", 0
    overrides = ("train.steps=40", "train.checkpoint_every=5", "train.log_every=5")
    for _ in range(kills):
        pid = os.fork()
        if pid == 0:  # child
            try:
                resume = bool(checkpoint_dirs(run))
                if resume:
                    cfg = load_run_config(run)
                else:
                    cfg = with_dataset(load_config(DEBUG, overrides), dataset)
                train(cfg, run, resume=resume, progress=False)
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0.3, 2.5))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        try:
            if checkpoint_dirs(run):
                load_policy(run, which="raw")
            survived += 1
        except Exception as e:  # noqa: BLE001 - counted, reported
            print(f"  run dir damaged: {e}")
    train(load_run_config(run), run, resume=True, progress=False)
    return {"training_sigkills": kills, "training_sigkills_survived": survived,
            "final_step": int(checkpoint_dirs(run)[-1].name[5:])}  # fmt: skip


def bad_input_sweep(good_file: str, tmp: Path, n: int, rng: random.Random) -> dict:
    base = yaml.safe_load(DEBUG.read_text())
    junk = [None, True, -1, 0, 3, 2**70, 1.5, float("nan"), float("inf"), "x", "", [],
            [1, "a"], {"a": 1}, -0.5]  # fmt: skip
    stats = {"configs_tried": 0, "configs_refused": 0, "configs_accepted": 0, "configs_crashed": 0}
    for _ in range(n):
        data = copy.deepcopy(base)
        section = rng.choice(["data", "model", "policy", "train", "eval", "control"])
        keys = list(getattr(config_from_dict({}), section).__dict__)
        data.setdefault(section, {})[rng.choice(keys + ["bogus_key"])] = rng.choice(junk)
        stats["configs_tried"] += 1
        try:
            config_from_dict(data)
            stats["configs_accepted"] += 1
        except ConfigError:
            stats["configs_refused"] += 1
        except Exception:  # noqa: BLE001
            stats["configs_crashed"] += 1
    raw = Path(good_file).read_bytes()
    ds = {"datasets_tried": 0, "datasets_refused": 0, "datasets_accepted": 0, "datasets_crashed": 0}
    edits = ["truncate", "nan", "inf", "zero_len", "drop_obs", "drop_actions", "bad_dtype",
             "attr_blob", "bad_json", "shape", "mode"]  # fmt: skip
    for i in range(n):
        path = tmp / f"bad_{i}.hdf5"
        path.write_bytes(raw)
        edit = rng.choice(edits)
        if edit == "truncate":
            path.write_bytes(raw[: rng.randrange(0, len(raw))])
        else:
            with h5py.File(path, "r+") as f:
                g = f[f"data/demo_{rng.randrange(0, 4)}"]
                if edit in ("nan", "inf"):
                    a = g["actions"][()]
                    a.flat[rng.randrange(a.size)] = np.nan if edit == "nan" else np.inf
                    del g["actions"]
                    g["actions"] = a
                elif edit == "zero_len":
                    del g["actions"]
                    g["actions"] = np.zeros((0, 2), np.float32)
                elif edit == "drop_obs":
                    del g["obs"]
                elif edit == "drop_actions":
                    del g["actions"]
                elif edit == "bad_dtype":
                    del g["actions"]
                    g["actions"] = np.array([b"ab"] * 3)
                elif edit == "attr_blob":
                    f["data"].attrs["env_args"] = np.void(b"\x80\x04cos\nsystem\n")
                elif edit == "bad_json":
                    f["data"].attrs["mode_names"] = "[unclosed"
                elif edit == "shape":
                    del g["obs/observation"]
                    g["obs/observation"] = np.zeros((3, 7), np.float32)
                elif edit == "mode":
                    g.attrs["mode"] = rng.choice([-7, 10**9, "left"])
        ds["datasets_tried"] += 1
        try:
            load_demos(path)
            ds["datasets_accepted"] += 1
        except DatasetError:
            ds["datasets_refused"] += 1
        except Exception:  # noqa: BLE001
            ds["datasets_crashed"] += 1
        path.unlink()
    return {**stats, **ds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--chunk", type=int, default=100)
    p.add_argument("--envs", type=int, default=8)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--bad-inputs", type=int, default=300)
    p.add_argument("--results", help="directory of the results file (default: benchmarks/results)")
    a = p.parse_args()
    torch.set_num_threads(1)
    rng = random.Random(0)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        data = str(tmp / "reach.hdf5")
        collect("diffpolicy/ReachAround-v0", 20, data, workers=1, progress=False)
        cfg = with_dataset(load_config(DEBUG, ("train.steps=200",)), data)
        run = train(cfg, tmp / "run", progress=False)
        print("soak: evaluation", flush=True)
        result = {"eval": soak_eval(run, a.episodes, a.chunk, a.envs)}
        print("soak: training kills", flush=True)
        result["training"] = kill_resume_sweep(data, tmp, a.kills, rng)
        print("soak: bad inputs", flush=True)
        result["bad_inputs"] = bad_input_sweep(data, tmp, a.bad_inputs, rng)
    result["seconds_total"] = round(time.perf_counter() - t0, 1)
    e = result["eval"]
    result["pass"] = bool(
        e["rss_growth_after_warmup"] < 0.05
        and e["bullet_clients_leaked"] == 0
        and e["child_processes_left"] == 0
        and e["faults"]["evaluation_survived"]
        and result["training"]["training_sigkills_survived"]
        == result["training"]["training_sigkills"]
        and result["bad_inputs"]["configs_crashed"] == 0
        and result["bad_inputs"]["datasets_crashed"] == 0
    )
    print(json.dumps(result, indent=2))
    write_result("soak", result, a.results)


if __name__ == "__main__":
    main()
