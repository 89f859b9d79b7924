"""Reliability: fuzzed command lines for every subcommand, SIGTERM, concurrent writers, a full
disk, a DDP rank that dies.

    python benchmarks/reliability.py [--lines 2000] [--seed 0] [--trials 20]
                                                    -> benchmarks/results/reliability.json

- fuzz: `--lines` seeded command lines (tests/faults.py: Fuzzer -- unknown flags, wrong types,
  missing and extra positionals, foreign files of each kind, unusable output paths, junk
  overrides, no command and unknown commands) through `diffpolicy.cli.main` in this process
  (stdout and stderr captured at the fd level, valid quickstart / modes / bench lines stubbed:
  they are minutes of valid work), and a sample through `python -m diffpolicy`. Allowed: exit
  0, exit 2 with exactly one line on stderr, 130. Counted: tracebacks, hangs, other exit
  codes, multi-line errors (all must be 0).
- sigterm: `train` SIGTERMed mid-run (the debug config, and ReachAround's default config on 20
  demos): seconds to exit, exit code, the checkpoint step, and whether --resume ends with
  exactly the weights of an uninterrupted run.
- concurrent writers: a second `train` into a held run directory and a second `collect` to a
  held output file (refused in one line?), two `train`s started at once into one new directory
  (exactly one runs?), a holder SIGKILLed (the next run succeeds?).
- enospc: a real full disk (tiny tmpfs) under collect --append, train checkpoints, eval
  --json/--report/--video, info --json/--plot, and injected ENOSPC in metrics.jsonl appends
  and checkpoint writes: damaged or half-written files, temporary files left, previous files
  changed (all must be 0).
- ddp: SIGKILL rank 1 of a 2-process gloo run: seconds until rank 0 exits.
"""

from __future__ import annotations

import argparse
import collections
import errno
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # faults.py and helpers.py: shared with the tests

import torch  # noqa: E402
from faults import (  # noqa: E402
    FILLER,
    Fuzzer,
    HalfThenFull,
    Outcome,
    World,
    fill,
    fork_quiet,
    hidden,
    lock_holders,
    mount_tmpfs,
    remount,
    run_main,
    snapshot,
    stub_expensive_work,
    umount,
    wait_for_lock,
)
from helpers import CLI_ENV, DEBUG, debug_cfg, wait, write_bimodal  # noqa: E402

import diffpolicy.checkpoint as ck  # noqa: E402
import diffpolicy.train as tr  # noqa: E402
from diffpolicy.bench import write_result  # noqa: E402
from diffpolicy.checkpoint import checkpoint_dirs, load_policy, read_train_state  # noqa: E402
from diffpolicy.collect import collect  # noqa: E402
from diffpolicy.dataset import load_demos  # noqa: E402
from diffpolicy.train import train  # noqa: E402

ENV = "diffpolicy/ReachAround-v0"
ALLOWED = ("ok", "error", "interrupted")


def quiet_main(argv: list[str]) -> Outcome:
    return run_main([str(a) for a in argv], timeout=300)


def train_ten_steps(data, run) -> Outcome:
    """`train` of the debug config on `data` into `run`: 10 steps, a checkpoint every 5."""
    return quiet_main(
        ["train", DEBUG, "--dataset", data, "--out", run, "train.steps=10",
         "train.checkpoint_every=5"]
    )  # fmt: skip


# ------------------------------------------------------------------------------------- fuzz


def fuzz(world: World, lines: int, seed: int, subprocess_lines: int) -> dict:
    restore = stub_expensive_work()
    here = os.getcwd()
    os.chdir(world.cwd)
    try:
        verdicts, by_command, failures, slowest = collections.Counter(), {}, [], []
        t0 = time.perf_counter()
        outcomes = []
        for i, argv in enumerate(Fuzzer(world, seed).lines(lines)):
            o = run_main(argv, timeout=120)
            outcomes.append(o)
            verdicts[o.verdict] += 1
            name = argv[0] if argv and argv[0] in Fuzzer.COMMANDS else "(none or unknown)"
            by_command.setdefault(name, collections.Counter())[o.verdict] += 1
            if o.verdict not in ALLOWED:
                failures.append(o.describe()[:2000])
            slowest.append((round(o.seconds, 2), argv))
            if (i + 1) % 250 == 0:
                print(f"  fuzz {i + 1}/{lines}: {dict(verdicts)}", flush=True)
        seconds = time.perf_counter() - t0
    finally:
        restore()
    # a sample through new interpreters: the lines that need no stub (refused ones, and
    # accepted lines of the cheap commands), two at a time
    rng = random.Random(seed)
    cheap = [
        o for o in outcomes if o.verdict == "error" or (o.argv and o.argv[0] in ("info", "collect"))
    ]
    sample = rng.sample(cheap, min(subprocess_lines, len(cheap)))
    sub_verdicts, agree, sub_failures = collections.Counter(), 0, []
    for pair in (sample[i : i + 2] for i in range(0, len(sample), 2)):
        procs = [
            (
                o,
                subprocess.Popen(
                    [sys.executable, "-m", "diffpolicy", *o.argv],
                    cwd=world.cwd,
                    env=CLI_ENV,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                    errors="replace",
                ),
            )
            for o in pair
        ]
        for o, p in procs:
            try:
                _, err = p.communicate(timeout=300)
                real = Outcome(o.argv, p.returncode, err, 0.0)
            except subprocess.TimeoutExpired:
                p.kill()
                real = Outcome(o.argv, None, "", 0.0, hung=True)
            sub_verdicts[real.verdict] += 1
            agree += real.code == o.code and (real.code != 2 or real.lines == o.lines)
            if real.verdict not in ALLOWED:
                sub_failures.append(real.describe()[:2000])
    os.chdir(here)
    slowest.sort(key=lambda x: -x[0])
    return {
        "seed": seed,
        "lines": lines,
        "seconds": round(seconds, 1),
        "outcomes": dict(verdicts),
        "tracebacks": verdicts["traceback"],
        "hangs": verdicts["hang"],
        "other_exit_codes": verdicts["other_exit"],
        "multi_line_errors": verdicts["bad_stderr"],
        "by_command": {k: dict(v) for k, v in sorted(by_command.items())},
        "failures": failures[:20],
        "slowest": slowest[:5],
        "pickle_payload_ran": world.pwned.exists(),
        "special_files_replaced": world.replaced_special_files(),
        "subprocess": {
            "lines": len(sample),
            "outcomes": dict(sub_verdicts),
            "same_code_and_line_as_in_process": agree,
            "failures": sub_failures[:10],
        },
    }


# ----------------------------------------------------------------------------------- sigterm


def same_weights(a: Path, b: Path) -> bool:
    for which in ("raw", "ema"):
        pa, _ = load_policy(a, which=which)
        pb, _ = load_policy(b, which=which)
        for x, y in zip(pa.state_dict().values(), pb.state_dict().values()):
            if not torch.equal(x, y):
                return False
    return True


def sigterm(
    tmp: Path, data: str, trials: int, config: Path = DEBUG, common=("train.steps=30",)
) -> dict:
    """SIGTERM `trials` runs of `config` once metrics.jsonl has its first line."""
    from diffpolicy.config import load_config, with_dataset

    ref_cfg = with_dataset(load_config(config, list(common)), data)
    ref = train(ref_cfg, tmp / f"sigterm_ref_{config.stem}", progress=False)
    rows = []
    for k in range(trials):
        run = tmp / f"sigterm_{config.stem}{k}"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "diffpolicy",
                "train",
                str(config),
                "--dataset",
                data,
                "--out",
                str(run),
                *common,
            ],
            cwd=ROOT,
            env=CLI_ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        while not (run / "metrics.jsonl").exists() and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(random.Random(k).uniform(0.0, 0.3))
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
        seconds = time.perf_counter() - t0
        step = (
            int(out.split("checkpoint written at step ")[1].split(";")[0])
            if ("checkpoint written at step " in out)
            else None
        )
        newest = checkpoint_dirs(run)[-1].name if checkpoint_dirs(run) else None
        resumed = quiet_main(["train", "--resume", run]).code == 0
        rows.append(
            {
                "seconds_to_exit": round(seconds, 3),
                "exit_code": proc.returncode,
                "stopped_at_step": step,
                "checkpoint_at_that_step": newest == (f"step_{step:08d}" if step else None),
                "last_line": err.strip().splitlines()[-1] if err.strip() else "",
                "traceback": "Traceback" in err,
                "resumed_weights_equal_uninterrupted": resumed and same_weights(ref, run),
            }
        )
    return {
        "config": str(config.relative_to(ROOT)),
        "overrides": list(common),
        "trials": trials,
        "max_seconds_to_exit": max(r["seconds_to_exit"] for r in rows),
        "all_exit_130": all(r["exit_code"] == 130 for r in rows),
        "all_resumed_exactly": all(r["resumed_weights_equal_uninterrupted"] for r in rows),
        "runs": rows,
    }


# ------------------------------------------------------------------------ concurrent writers


def concurrent_writers(tmp: Path, data: str, trials: int) -> dict:
    def refused(argv) -> bool:
        o = quiet_main(argv)
        return o.code == 2 and len(o.lines) == 1 and "is in use by another" in o.lines[0]

    train_refused = train_next_ok = collect_refused = collect_next_ok = 0
    refusal_seconds = []
    for k in range(trials):
        run = tmp / f"held{k}"
        holder = fork_quiet(
            lambda run=run: tr_main(
                [
                    "train",
                    str(DEBUG),
                    "--dataset",
                    data,
                    "--out",
                    str(run),
                    "train.steps=100000",
                    "train.checkpoint_every=100000",
                ]
            )
        )
        try:
            wait_for_lock(run / ".lock", holder)
            t0 = time.perf_counter()
            train_refused += refused(
                ["train", DEBUG, "--dataset", data, "--out", run, "train.steps=3"]
            )
            refusal_seconds.append(time.perf_counter() - t0)
            assert lock_holders(run / ".lock") == {holder}
        finally:
            os.kill(holder, signal.SIGKILL)
            wait(holder)
        o = quiet_main(["train", DEBUG, "--dataset", data, "--out", run, "train.steps=3"])
        train_next_ok += o.code == 0 and len(checkpoint_dirs(run)) == 1

        out = tmp / f"held{k}.hdf5"
        holder = fork_quiet(
            lambda out=out: tr_main(["collect", ENV, "--episodes", "100000", "--out", str(out)])
        )
        try:
            wait_for_lock(out.with_name(f".{out.name}.lock"), holder)
            t0 = time.perf_counter()
            collect_refused += refused(["collect", ENV, "--episodes", "1", "--out", out])
            refusal_seconds.append(time.perf_counter() - t0)
        finally:
            os.kill(holder, signal.SIGKILL)
            wait(holder)
        o = quiet_main(["collect", ENV, "--episodes", "1", "--out", out])
        collect_next_ok += o.code == 0 and len(load_demos(out).episodes) == 1

    # two `train`s started at the same moment into one new directory
    races = []
    for k in range(trials):
        run = tmp / f"race{k}"
        argv = ["train", str(DEBUG), "--dataset", data, "--out", str(run), "train.steps=20"]
        pids = [fork_quiet(lambda argv=argv: tr_main(argv)) for _ in range(2)]
        races.append(tuple(sorted(wait(p, timeout=300) for p in pids)))
    return {
        "trials": trials,
        "train_second_writer_refused": train_refused,
        "train_refusal_rate": train_refused / trials,
        "collect_second_writer_refused": collect_refused,
        "collect_refusal_rate": collect_refused / trials,
        "max_refusal_seconds": round(max(refusal_seconds), 3),
        "run_after_sigkilled_holder_succeeded": train_next_ok,
        "collect_after_sigkilled_holder_succeeded": collect_next_ok,
        "simultaneous_starts_exactly_one_ran": sum(r == (0, 2) for r in races),
        "simultaneous_start_outcomes": dict(collections.Counter(map(str, races))),
    }


def tr_main(argv) -> int:
    from diffpolicy import cli

    return cli.main([str(a) for a in argv])


# ------------------------------------------------------------------------------- full disk


def damaged(directory: Path) -> list[str]:
    """Files under `directory` that do not load as what their name says."""
    from PIL import Image

    bad = []
    for p in sorted(directory.rglob("*")):
        if not p.is_file() or p.name in (FILLER,) or p.name.startswith("."):
            continue
        try:
            if p.suffix == ".hdf5":
                load_demos(p)
            elif p.suffix == ".json":
                json.loads(p.read_text())
            elif p.suffix == ".png":
                Image.open(p).verify()
            elif p.suffix == ".mp4":
                assert p.read_bytes()[4:8] == b"ftyp"
            elif p.name == "metrics.jsonl":
                text = p.read_text()
                assert not text or text.endswith("\n")
                for ln in text.splitlines():
                    json.loads(ln)
            elif p.name == "model.safetensors":
                ck.read_weights(p.parent, "raw")
            elif p.name == "train_state.pt":
                read_train_state(p.parent)
            elif p.name == "config.yaml":
                ck.load_run_config(p.parent)
        except Exception as e:  # noqa: BLE001 - any failure to load is damage
            bad.append(f"{p.relative_to(directory)}: {type(e).__name__}")
    return bad


def temps(directory: Path) -> list[str]:
    """Temporary files and directories left (locks of finished writers too)."""
    return [h for h in hidden(directory) if ".tmp" in h or ".step_" in h or h.endswith(".lock")]


class Scenarios:
    def __init__(self, tmp: Path, data: str, reach_run: Path):
        self.tmp, self.data, self.reach_run, self.rows = tmp, data, reach_run, []

    def record(self, name: str, o: Outcome, directory: Path, before: dict | None):
        """One failed write: its exit and line, then (at once) the files it left."""
        changed = 0
        if before is not None:
            now = snapshot(directory)
            changed = sum(now.get(k) != v for k, v in before.items())
        self.rows.append(
            {
                "scenario": name,
                "exit_code": o.code,
                "one_line": len(o.lines) == 1,
                "line": o.lines[-1][:200] if o.lines else "",
                "names_no_space": "No space left on device" in "".join(o.lines),
                "damaged_files": damaged(directory),
                "temp_files_left": temps(directory),
                "previous_files_changed": changed,
                "next_write_ok_and_no_temps": None,  # set after the next write
            }
        )

    def mount(self, name: str, size: str) -> Path:
        return mount_tmpfs(self.tmp / name, f"size={size}")

    def collect_append(self):
        mnt = self.mount("d_collect", "256k")
        try:
            out = mnt / "demos.hdf5"
            quiet_main(["collect", ENV, "--episodes", "2", "--out", out])
            before = snapshot(mnt)
            fill(mnt, leave=24 << 10)
            o = quiet_main(["collect", ENV, "--episodes", "4", "--out", out, "--append"])
            self.record("collect --append", o, mnt, before)
            (mnt / FILLER).unlink()
            ok = quiet_main(["collect", ENV, "--episodes", "1", "--out", out, "--append"])
            self.rows[-1]["next_write_ok_and_no_temps"] = ok.code == 0 and not temps(mnt)
        finally:
            umount(mnt)

    def checkpoint(self, fails_in: str, ref: Path):
        first = checkpoint_dirs(ref)[0]
        model, state = ((first / n).stat().st_size for n in ("model.safetensors", "train_state.pt"))
        extra = model // 2 if fails_in == "model.safetensors" else model + state // 2
        mnt = self.mount(f"d_ckpt_{fails_in}", f"{(model + state + extra) // 1024 + 12}k")
        try:
            run = mnt / "run"
            o = train_ten_steps(self.data, run)
            self.record(f"train, checkpoint {fails_in}", o, mnt, None)
            remount(mnt, "size=8m")
            ok = quiet_main(["train", "--resume", run])
            self.rows[-1]["next_write_ok_and_no_temps"] = (
                ok.code == 0 and not hidden(run) and same_weights(ref, run)
            )
        finally:
            umount(mnt)

    def eval_info(self):
        mnt = self.mount("d_eval", "2m")
        try:
            ev = ["eval", self.reach_run, "--episodes", "1", "--envs", "1"]
            data = self.reach_run.parent / "demos.hdf5"
            js, rep, vid, info = mnt / "eval.json", mnt / "rep", mnt / "vid", mnt / "info.json"
            quiet_main([*ev, "--json", js, "--report", rep, "--video", vid])
            quiet_main(["info", data, "--json", info, "--plot", mnt / "p.png"])
            before = snapshot(mnt)
            fill(mnt)
            for name, argv in [
                ("eval --json", [*ev, "--json", js]),
                ("eval --report", [*ev, "--report", rep]),
                ("eval --video", [*ev, "--video", vid]),
                ("info --json", ["info", data, "--json", info]),
                ("info --plot", ["info", data, "--plot", mnt / "p.png"]),
            ]:
                self.record(name, quiet_main(argv), mnt, before)
            (mnt / FILLER).unlink()
            ok = quiet_main([*ev, "--json", js, "--report", rep, "--video", vid])
            for row in self.rows[-5:]:
                row["next_write_ok_and_no_temps"] = ok.code == 0 and not temps(mnt)
        finally:
            umount(mnt)

    def injected_metrics(self, ref: Path):
        run = self.tmp / "inj_metrics"
        real_open, calls = open, {"n": 0}

        def opener(path, mode="r", *a, **kw):
            f = real_open(path, mode, *a, **kw)
            if Path(path).name == "metrics.jsonl" and "a" in mode:
                calls["n"] += 1
                if calls["n"] == 3:
                    return HalfThenFull(f)
            return f

        tr.open = opener
        try:
            o = quiet_main(
                [
                    "train",
                    DEBUG,
                    "--dataset",
                    self.data,
                    "--out",
                    run,
                    "train.steps=20",
                    "train.checkpoint_every=10",
                ]
            )
        finally:
            del tr.open
        self.record("injected ENOSPC: metrics.jsonl append", o, run, None)
        ok = quiet_main(["train", "--resume", run])
        self.rows[-1]["next_write_ok_and_no_temps"] = ok.code == 0 and not hidden(run)

    def injected_checkpoint(self, writer: str, ref: Path):
        run = self.tmp / f"inj_{writer}"
        module, name = (ck, "save_file") if writer == "save_file" else (torch, "save")
        real, calls = getattr(module, name), {"n": 0}

        def half_then_full(obj, path, *a, **kw):
            calls["n"] += 1
            real(obj, path, *a, **kw)
            if calls["n"] >= 2:
                Path(path).write_bytes(Path(path).read_bytes()[: Path(path).stat().st_size // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        setattr(module, name, half_then_full)
        try:
            o = train_ten_steps(self.data, run)
        finally:
            setattr(module, name, real)
        self.record(f"injected ENOSPC: {writer}", o, run, None)
        ok = quiet_main(["train", "--resume", run])
        self.rows[-1]["next_write_ok_and_no_temps"] = (
            ok.code == 0 and not hidden(run) and same_weights(ref, run)
        )


def enospc(tmp: Path, data: str, reach_run: Path) -> dict:
    ref = train(
        debug_cfg(data, "train.steps=10", "train.checkpoint_every=5"), tmp / "ref10", progress=False
    )
    s = Scenarios(tmp, data, reach_run)
    s.collect_append()
    for fails_in in ("model.safetensors", "train_state.pt"):
        s.checkpoint(fails_in, ref)
    s.eval_info()
    s.injected_metrics(ref)
    for writer in ("save_file", "torch.save"):
        s.injected_checkpoint(writer, ref)
    rows = s.rows
    return {
        "scenarios": len(rows),
        "all_exit_2_one_line": all(r["exit_code"] == 2 and r["one_line"] for r in rows),
        "all_name_no_space_left": all(r["names_no_space"] for r in rows),
        "damaged_files": sum(len(r["damaged_files"]) for r in rows),
        "temp_files_left": sum(len(r["temp_files_left"]) for r in rows),
        "previous_files_changed": sum(r["previous_files_changed"] for r in rows),
        "next_write_ok_and_no_temps": sum(bool(r["next_write_ok_and_no_temps"]) for r in rows),
        "rows": rows,
    }


# --------------------------------------------------------------------------------------- ddp


def ddp_rank_death(tmp: Path, data: str) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run, procs = tmp / "ddp", []
    for rank in range(2):
        env = {
            **CLI_ENV,
            "WORLD_SIZE": "2",
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "diffpolicy",
                    "train",
                    str(DEBUG),
                    "--dataset",
                    data,
                    "--out",
                    str(run),
                    "train.steps=100000",
                    "train.device=cpu",
                    "train.checkpoint_every=5",
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    while not checkpoint_dirs(run) and all(p.poll() is None for p in procs):
        time.sleep(0.05)
    procs[1].kill()
    t0 = time.perf_counter()
    try:
        _, err = procs[0].communicate(timeout=400)
        hung = False
    except subprocess.TimeoutExpired:
        procs[0].kill()
        err, hung = "", True
    seconds = time.perf_counter() - t0
    procs[1].wait()
    lines = [ln for ln in err.splitlines() if ln.strip() and "|" not in ln]
    return {
        "rank0_seconds_to_exit_after_rank1_sigkill": round(seconds, 2),
        "collective_timeout_s": tr.DDP_TIMEOUT_S,
        "hung": hung,
        "rank0_exit_code": procs[0].returncode,
        "rank0_stderr_lines": len(lines),
        "rank0_line": lines[-1][:300] if lines else "",
        "lock_released": not (run / ".lock").exists(),
    }


# -------------------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=2000, help="fuzzed command lines (in-process)")
    p.add_argument("--subprocess-lines", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trials", type=int, default=20, help="concurrent-writer trials")
    p.add_argument("--sigterm-trials", type=int, default=3)
    p.add_argument("--out", default="reliability")
    a = p.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("WANDB_MODE", "disabled")
    result: dict = {"seed": a.seed}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="reliability.") as d:
        tmp = Path(d)
        data = write_bimodal(tmp / "toy.hdf5")
        (tmp / "reach").mkdir()
        collect(ENV, 3, str(tmp / "reach" / "demos.hdf5"), progress=False)
        reach_run = train(
            debug_cfg(tmp / "reach" / "demos.hdf5", "train.steps=2"),
            tmp / "reach" / "run",
            progress=False,
        )
        toy_run = train(debug_cfg(data, "train.steps=5"), tmp / "toyrun", progress=False)
        ro = tmp / "ro"
        mount_tmpfs(ro, "size=1m,ro")
        try:
            world = World(
                tmp / "world", reach_run, toy_run, tmp / "reach" / "demos.hdf5", Path(data), ro
            )
            print(f"fuzz: {a.lines} lines, seed {a.seed}", flush=True)
            result["fuzz"] = fuzz(world, a.lines, a.seed, a.subprocess_lines)
        finally:
            umount(ro)
        print("sigterm", flush=True)
        common = ("train.steps=30", "train.log_every=5", "train.val_every=1")
        result["sigterm"] = sigterm(tmp, data, a.sigterm_trials, DEBUG, common)
        print("sigterm at the default config", flush=True)  # ReachAround's CPU config
        reach_data = str(tmp / "reach" / "demos20.hdf5")
        collect(ENV, 20, reach_data, progress=False)
        result["sigterm_default_config"] = sigterm(
            tmp, reach_data, 1, ROOT / "configs" / "reach_around.yaml", ("train.steps=300",)
        )
        print("concurrent writers", flush=True)
        result["concurrent_writers"] = concurrent_writers(tmp, data, a.trials)
        print("full disk", flush=True)
        result["enospc"] = enospc(tmp, data, reach_run)
        print("ddp", flush=True)
        result["ddp_rank_death"] = ddp_rank_death(tmp, data)
    result["seconds"] = round(time.perf_counter() - t_all, 1)
    f = result["fuzz"]
    result["summary"] = {
        "fuzz_lines": f["lines"] + f["subprocess"]["lines"],
        "fuzz_tracebacks": f["tracebacks"] + f["subprocess"]["outcomes"].get("traceback", 0),
        "fuzz_other_exit_codes": f["other_exit_codes"]
        + f["hangs"]
        + f["multi_line_errors"]
        + sum(f["subprocess"]["outcomes"].get(k, 0) for k in ("other_exit", "hang", "bad_stderr")),
        "sigterm_max_seconds_to_exit": result["sigterm"]["max_seconds_to_exit"],
        "sigterm_default_config_seconds_to_exit": result["sigterm_default_config"][
            "max_seconds_to_exit"
        ],
        "concurrent_writer_refusal_rate": min(
            result["concurrent_writers"]["train_refusal_rate"],
            result["concurrent_writers"]["collect_refusal_rate"],
        ),
        "enospc_damaged_files": result["enospc"]["damaged_files"],
        "ddp_rank0_seconds_to_exit": result["ddp_rank_death"][
            "rank0_seconds_to_exit_after_rank1_sigkill"
        ],
    }
    print(json.dumps(result["summary"], indent=1))
    write_result(a.out, result)


if __name__ == "__main__":
    main()
