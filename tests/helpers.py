"""Plain helpers shared by several test files (fixtures live in conftest.py): synthetic demo
files, the debug config, running the CLI, forked children, pickle payloads, stand-ins for the
language encoder and for a policy."""

from __future__ import annotations

import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from diffpolicy import cli
from diffpolicy.config import config_from_dict, load_config
from diffpolicy.dataset import Demos, Episode, write_demos

ROOT = Path(__file__).resolve().parents[1]
DEBUG = ROOT / "configs" / "debug.yaml"
CLI_ENV = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}


# ------------------------------------------------------------------------------ synthetic demos


def bimodal_demos(n: int = 20, length: int = 12, seed: int = 0) -> Demos:
    """Planar 'reach around' toy: start near (0, 0), go to (0, 1) left (x<0) or right (x>0).

    obs/observation (T, 2) = position, obs/desired_goal (T, 2), actions (T, 2) = next position.
    """
    rng = np.random.default_rng(seed)
    episodes = []
    for i in range(n):
        mode = i % 2
        side = -1.0 if mode == 0 else 1.0
        s = np.linspace(0, 1, length + 1)
        x = side * 0.5 * np.sin(np.pi * s) + rng.normal(0, 0.01, s.shape)
        y = s + rng.normal(0, 0.01, s.shape)
        pos = np.stack([x, y], 1).astype(np.float32)
        goal = np.tile(np.array([0.0, 1.0], np.float32), (length, 1))
        episodes.append(
            Episode(
                obs={"observation": pos[:-1], "desired_goal": goal},
                actions=pos[1:],
                rewards=np.zeros(length, np.float32),
                dones=np.arange(length) == length - 1,
                mode=mode,
                mode_name=["left", "right"][mode],
                instruction=["go left", "go right"][mode],
                seed=i,
            )
        )
    return Demos(
        episodes,
        env_args={"env_name": "toy", "env_type": 2, "env_kwargs": {}},
        mode_names=["left", "right"],
        layout={"obstacles": [[0.0, 0.5, 0.2]]},
    )


def write_bimodal(path, **kw) -> str:
    write_demos(path, bimodal_demos(**kw))
    return str(path)


# ---------------------------------------------------------------------------- configs and CLI


def camera_demos(path, episodes: int, camera: str, size: int = 32):
    """`episodes` ReachAround expert demos with one `camera` (size x size) written to `path`."""
    from diffpolicy.collect import collect

    kwargs = {"cameras": [camera], "image_size": size}
    collect("diffpolicy/ReachAround-v0", episodes, str(path), progress=False, env_kwargs=kwargs)
    return path


def debug_cfg(dataset, *overrides):
    cfg = load_config(DEBUG, overrides)
    cfg.data.dataset = str(dataset)
    return cfg


def tiny_cfg(**data):
    cfg = config_from_dict(
        {
            "data": {"n_obs_steps": 2, "horizon": 8, **data},
            "control": {"n_action_steps": 4},
            "model": {"down_dims": [16, 32], "n_groups": 4},
        }
    )
    cfg.dims = {"obs_dim": 4, "action_dim": 2, "goal_dim": 2, "num_modes": 2, "lang_dim": 0}
    return cfg


def run_cli(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "diffpolicy", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=CLI_ENV,
    )


PROGRESS = re.compile(r"^(train|eval|collect \S+): .*\|")


def one_line_exit_2(capsys, argv, message=None):
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse errors
        code = e.code
    err = capsys.readouterr().err
    # progress bars (tqdm, on stderr) are not messages: drop them, keep everything else
    lines = [ln for ln in err.splitlines() if ln.strip() and not PROGRESS.match(ln)]
    assert code == 2, (argv, code, err)
    assert len(lines) == 1, err
    if message:
        assert message in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------ processes
# Kills use os.fork(): the child inherits the imported modules, so a kill costs no interpreter
# start-up.


def fork(fn) -> int:
    """Run fn() in a forked child; the child exits with fn's return value (or 1 on error)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            # tqdm's write lock is a multiprocessing lock shared across fork: a child killed
            # while holding it would block the parent's next progress bar forever
            tqdm.set_lock(threading.RLock())
            code = int(fn() or 0)
        except KeyboardInterrupt:
            code = 130
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    return pid


def wait(pid: int, timeout: float = 60.0) -> int:
    """Exit status of a child: its code, or -signal when killed."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"child {pid} did not finish in {timeout} s")


def kill_self(*_, **__):
    os.kill(os.getpid(), signal.SIGKILL)


def children_of(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (from /proc; psutil is not needed), leaving out
    multiprocessing's resource tracker (one per process, started with the first 'spawn')."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                status = (d / "status").read_text()
                if b"resource_tracker" in (d / "cmdline").read_bytes():
                    continue
            except OSError:
                continue
            ppid = next(ln for ln in status.splitlines() if ln.startswith("PPid:"))
            if int(ppid.split()[1]) == pid:
                out.append(int(d.name))
    return out


# ------------------------------------------------------------------------------ pickle payloads


class Payload:
    """Creates `marker` when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def payload_bytes(marker, protocol=None) -> bytes:
    return pickle.dumps({"step": 5, "x": Payload(marker)}, protocol=protocol)


# --------------------------------------------------------------------------------- stand-ins


class FakeEncoder:
    """Deterministic stand-in for a SentenceTransformer: nearly parallel unit vectors (cosine
    ~0.98 between different texts, like MiniLM's "...left" vs "...right"), counting calls.
    With output_value="token_embeddings": per text, one (T, dim) tensor, a fixed random vector
    per word between [CLS] and [SEP] rows."""

    def __init__(self, dim: int = 16):
        self.dim, self.encoded = dim, []

    def encode(self, texts, **kw):
        self.encoded.extend(texts)
        if kw.get("output_value") == "token_embeddings":
            out = []
            for t in texts:
                words = ["[CLS]", *t.lower().replace(",", " ").split(), "[SEP]"]
                vecs = [
                    np.random.default_rng(sum(map(ord, w)) * 7 + len(w)).standard_normal(self.dim)
                    for w in words
                ]
                out.append(torch.from_numpy(np.stack(vecs).astype(np.float32)))
            return out
        rows = []
        for t in texts:
            rng = np.random.default_rng(sum(map(ord, t)))
            v = np.ones(self.dim) + 0.12 * rng.standard_normal(self.dim)
            if "left" in t:
                v[0] += 0.5
            rows.append(v / np.linalg.norm(v))
        return np.stack(rows).astype(np.float32)


class ScriptedPolicy(torch.nn.Module):
    """Returns chunk[b, i] = (call index, i) so tests can see which slice was executed."""

    def __init__(self, horizon, nan=False):
        super().__init__()
        self.register_buffer("dummy", torch.zeros(1))
        self.calls, self.horizon, self.nan = 0, horizon, nan
        self.seen = []

    def predict_action_chunk(self, obs, sampling=None, *, generator=None):
        B = obs["obs"].shape[0]
        self.seen.append(obs)
        i = torch.arange(self.horizon, dtype=torch.float32)
        chunk = torch.stack([torch.full_like(i, float(self.calls)), i], -1)
        self.calls += 1
        out = chunk.expand(B, -1, -1).clone()
        if self.nan:
            out[:] = float("nan")
        return out
