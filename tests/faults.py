"""Fault injection shared by the reliability tests (test_files.py, test_collect_append.py,
test_train.py, test_cli_fuzz.py) and benchmarks/reliability.py: tiny tmpfs mounts (a full
disk, a read-only file system), disk filling, writer-lock probes, file snapshots, the
in-process command runner with its verdicts, and the seeded command-line fuzzer."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from helpers import CLI_ENV, DEBUG, PROGRESS

# ------------------------------------------------------------------ mounts and a full disk


class MountUnavailable(Exception):
    """tmpfs cannot be mounted here (not root, or no mount namespace rights)."""


def mount_tmpfs(target: str | Path, options: str) -> Path:
    """Mount a tmpfs with `options` (e.g. "size=64k", "size=1m,ro") on `target`."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
        capture_output=True,
        text=True,
    )
    if r.returncode:
        why = r.stderr.strip() or f"mount exited {r.returncode}"
        raise MountUnavailable(f"cannot mount a tmpfs ({options}) here: {why} (needs root)")
    return target


def remount(target: str | Path, options: str) -> None:
    subprocess.run(
        ["mount", "-o", f"remount,{options}", str(target)], check=True, capture_output=True
    )


def umount(target: str | Path) -> None:
    if subprocess.run(["umount", str(target)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)  # busy: detach


@contextlib.contextmanager
def tmpfs(target: str | Path, options: str):
    path = mount_tmpfs(target, options)
    try:
        yield path
    finally:
        umount(path)


FILLER = "filler"


def fill(directory: str | Path, leave: int = 0) -> Path:
    """Fill the file system of `directory` with the file FILLER until about `leave` bytes
    are left (0: completely full)."""
    path = Path(directory) / FILLER
    st = os.statvfs(directory)
    todo = st.f_bavail * st.f_frsize - leave
    with open(path, "ab", buffering=0) as f:
        try:
            while leave == 0 or todo > 0:
                todo -= f.write(b"\0" * (4096 if leave == 0 else min(4096, todo)))
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
    return path


def snapshot(directory: str | Path, skip: tuple[str, ...] = (FILLER,)) -> dict[str, bytes]:
    """{relative path: bytes} of every file under `directory` (hidden ones included)."""
    root = Path(directory)
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def hidden(directory: str | Path) -> list[str]:
    """Relative paths under `directory` with a component starting with "." (temporary
    files and directories, locks)."""
    root = Path(directory)
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if any(part.startswith(".") for part in p.relative_to(root).parts)
    )


# ------------------------------------------------------------------------------ writer locks


def lock_holders(lock_path: str | Path) -> set[int]:
    """Process ids holding a flock on the file `lock_path` (from /proc/locks)."""
    try:
        st = os.stat(lock_path)
    except FileNotFoundError:
        return set()
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = set()
    for line in Path("/proc/locks").read_text().splitlines():
        f = line.split()
        if len(f) >= 6 and f[1] == "FLOCK" and f[5] == dev:
            pids.add(int(f[4]))
    return pids


def wait_for_lock(lock_path: str | Path, pid: int, timeout: float = 60.0) -> float:
    """Wait until process `pid` holds the lock on `lock_path`; return the seconds waited."""
    t0 = time.time()
    while pid not in lock_holders(lock_path):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            raise AssertionError(f"process {pid} exited before it took {lock_path}")
        if time.time() - t0 > timeout:
            raise AssertionError(f"process {pid} did not take {lock_path} in {timeout} s")
        time.sleep(0.005)
    return time.time() - t0


def fork_quiet(fn) -> int:
    """helpers.fork with the child's stdout and stderr sent to /dev/null."""
    from helpers import fork

    def child():
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        return fn()

    return fork(child)


# ------------------------------------------------------------------- running the command line


class Hang(BaseException):
    """Raised by SIGALRM when an in-process command runs past its budget."""


def _on_alarm(signum, frame):
    raise Hang()


def message_lines(err: str) -> list[str]:
    """stderr lines that are messages (tqdm progress bars are not)."""
    return [ln for ln in err.splitlines() if ln.strip() and not PROGRESS.match(ln)]


@dataclass
class Outcome:
    argv: list[str]
    code: int | None
    err: str
    seconds: float
    escaped: str | None = None  # the traceback of an exception that escaped main()
    hung: bool = False

    @property
    def lines(self) -> list[str]:
        return message_lines(self.err)

    @property
    def verdict(self) -> str:
        """ok | error (exit 2, one line) | interrupted (130) -- the allowed ones -- or
        hang | traceback | bad_stderr (exit 2, not one line) | other_exit."""
        if self.hung:
            return "hang"
        if self.escaped or "Traceback (most recent call last)" in self.err:
            return "traceback"
        if self.code == 0:
            return "ok"
        if self.code == 130:
            return "interrupted"
        if self.code == 2:
            return "error" if len(self.lines) == 1 else "bad_stderr"
        return "other_exit"

    def describe(self) -> str:
        tail = self.escaped or self.err
        return f"{self.verdict}: code {self.code} for {self.argv!r}\n{tail[-3000:]}"


def run_main(argv: list[str], timeout: float = 120.0) -> Outcome:
    """`diffpolicy.cli.main(argv)` in this process, as the real entry point runs it (SystemExit
    becomes the exit code), with stdout and stderr captured at the Python and the file
    descriptor level (ffmpeg and HDF5 write to fd 2), a time budget, and the torch thread
    count restored after."""
    from diffpolicy import cli

    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch else None
    out, err = io.StringIO(), io.StringIO()
    saved_fd = os.dup(2)
    fd_err = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    os.dup2(fd_err.fileno(), 2)
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    code, escaped, hung = None, None, False
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(list(argv))
            except SystemExit as e:  # argparse; `python -m diffpolicy` exits the same way
                code = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
    except Hang:
        hung = True
    except BaseException:
        escaped = traceback.format_exc()
    finally:
        seconds = time.perf_counter() - t0
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        fd_err.seek(0)
        c_err = fd_err.read().decode("utf-8", "replace")
        fd_err.close()
        if torch and threads:
            torch.set_num_threads(threads)
    return Outcome(list(argv), code, err.getvalue() + c_err, seconds, escaped, hung)


def run_subprocess(argv: list[str], cwd: str | Path, timeout: float = 120.0) -> Outcome:
    """`python -m diffpolicy ARGV` in a new interpreter (the real entry point)."""
    t0 = time.perf_counter()
    try:
        r = subprocess.run(
            [sys.executable, "-m", "diffpolicy", *argv],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            cwd=cwd,
            env=CLI_ENV,
        )
    except subprocess.TimeoutExpired:
        return Outcome(list(argv), None, "", time.perf_counter() - t0, hung=True)
    return Outcome(list(argv), r.returncode, r.stderr, time.perf_counter() - t0)


# ------------------------------------------------------------------------- the fuzzer's world

ENVS = ("diffpolicy/ReachAround-v0", "diffpolicy/ReachAroundMaze-v0", "diffpolicy/Pick-v0")
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00"
    b"\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)


class World:
    """Files of every kind a command reads, good and bad, under `root`; output paths of every
    kind a command writes to. Built from a valid ReachAround run (`run`, for eval, distill and
    resume), the toy run (trained on data of no env), and their demo files."""

    def __init__(
        self, root: Path, run: Path, toy_run: Path, demos: Path, toy_demos: Path, ro: Path | None
    ):
        self.root, self.ro, self.n = Path(root), ro, 0
        r = self.root
        for name in ("cwd", "out"):
            (r / name).mkdir(parents=True, exist_ok=True)
        self.cwd = r / "cwd"  # commands with default output paths write here
        shutil.copytree(run, r / "run")
        shutil.copytree(toy_run, r / "toyrun")
        shutil.copy(demos, r / "reach.hdf5")
        shutil.copy(toy_demos, r / "toy.hdf5")
        # configs: the debug config (stands alone), and YAML that is not a config
        shutil.copy(DEBUG, r / "debug.yaml")
        (r / "mse.yaml").write_text("base: debug.yaml\npolicy:\n  type: mse\n")
        (r / "list.yaml").write_text("- a\n- b\n")
        (r / "broken.yaml").write_text("train: [1, 2\n")
        (r / "unknown.yaml").write_text("base: debug.yaml\nnonsense: 1\n")
        (r / "loop.yaml").write_text("base: loop.yaml\n")
        (r / "tabs.yaml").write_text("train:\n\tsteps: 2\n")
        # demo-like files that are not demo files
        with h5py.File(r / "foreign.h5", "w") as f:
            f.create_dataset("x", data=np.arange(3))
        with h5py.File(r / "nodemos.hdf5", "w") as f:
            f.create_group("data")
        with h5py.File(r / "noactions.hdf5", "w") as f:
            f.create_dataset("data/demo_0/obs/observation", data=np.zeros((3, 2)))
        raw = (r / "reach.hdf5").read_bytes()
        (r / "trunc.hdf5").write_bytes(raw[: len(raw) // 3])
        (r / "junk.txt").write_text("not a file of any kind\n" * 3)
        (r / "junk.bin").write_bytes(random.Random(0).randbytes(4096))
        (r / "image.png").write_bytes(PNG)
        (r / "empty").write_bytes(b"")
        (r / "noperm.yaml").write_text("train: {steps: 2}\n")
        (r / "noperm.yaml").chmod(0)  # root reads it anyway: other unreadable kinds below
        # unreadable kinds a root process cannot read either
        os.mkfifo(r / "fifo")
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(r / "sock"))
        sock.close()
        os.mknod(r / "devnull", 0o666 | 0o020000, os.makedev(1, 3))  # a char device
        (r / "dangling").symlink_to(r / "nowhere")
        (r / "loop").symlink_to(r / "loop")
        (r / "a_dir.hdf5").mkdir()
        (r / "a_file").write_text("a regular file\n")
        # run directories that are not runs
        (r / "notrun").mkdir()
        (r / "junkrun").mkdir()
        (r / "junkrun" / "config.yaml").write_text("- not a config\n")
        (r / "nockpt").mkdir()
        shutil.copy(r / "run" / "config.yaml", r / "nockpt" / "config.yaml")
        shutil.copytree(r / "run", r / "badckpt")
        for p in (r / "badckpt").rglob("model.safetensors"):
            p.write_bytes(p.read_bytes()[:100])
        shutil.copytree(r / "run", r / "pickled")
        for p in (r / "pickled").rglob("train_state.pt"):
            from helpers import payload_bytes

            p.write_bytes(payload_bytes(r / "PWNED"))
        self.pwned = r / "PWNED"
        self.inputs = {
            "demos": [r / "reach.hdf5", r / "toy.hdf5"],
            "config": [r / "debug.yaml", r / "mse.yaml"],
            "run": [r / "run"],
            "bad": [
                r / "foreign.h5",
                r / "nodemos.hdf5",
                r / "noactions.hdf5",
                r / "trunc.hdf5",
                r / "junk.txt",
                r / "junk.bin",
                r / "image.png",
                r / "empty",
                r / "noperm.yaml",
                r / "list.yaml",
                r / "broken.yaml",
                r / "unknown.yaml",
                r / "loop.yaml",
                r / "tabs.yaml",
                r / "fifo",
                r / "sock",
                r / "devnull",
                r / "dangling",
                r / "loop",
                r / "a_dir.hdf5",
                r / "notrun",
                r / "junkrun",
                r / "nockpt",
                r / "badckpt",
                r / "pickled",
                r / "toyrun",
                r / "missing",
                r / "a_file" / "x",
                Path("/proc/self/mem"),
                r / ("x" * 300),
                r / "new\nline",
                r / "ünï cødé",
            ],
        }

    def replaced_special_files(self) -> list[str]:
        """The FIFO, socket and character device that are no longer what they were (a write
        renamed over /dev/null, as root, would replace the device)."""
        kinds = {"fifo": stat.S_ISFIFO, "sock": stat.S_ISSOCK, "devnull": stat.S_ISCHR}
        return [n for n, ok in kinds.items() if not ok(os.lstat(self.root / n).st_mode)]

    def fresh(self, suffix: str = "") -> str:
        """A new output path in a writable directory."""
        self.n += 1
        return str(self.root / "out" / f"o{self.n}{suffix}")

    def bad_output(self, rng: random.Random, file: bool) -> str:
        """An unusable output path: under a regular file, a directory where a file goes (or a
        file where a directory goes), a special file, a link to nowhere, a read-only place."""
        r, suffix = self.root, ".json" if file else ""
        kinds = [
            r / "a_file" / f"x{suffix}",
            r / ("notrun" if file else "a_file"),
            r / "fifo",
            r / "sock",
            r / "devnull",
            r / "dangling",
            r / "loop",
            r / "missing" / "deeper" / f"x{suffix}",
            r / ("y" * 300),
            Path(""),
        ]
        if self.ro is not None:
            kinds += [self.ro / f"x{suffix}", self.ro / "sub" / f"x{suffix}"]
        return str(rng.choice(kinds))

    def input_path(self, rng: random.Random, kind: str) -> str:
        pool = self.inputs[kind] if rng.random() < 0.5 else self.inputs["bad"]
        return str(rng.choice(pool))

    def copy_of(self, name: str) -> str:
        dst = self.fresh(Path(name).suffix)
        shutil.copy(self.root / name, dst)
        return dst


# ---------------------------------------------------------------------------------- the fuzzer

COUNT_JUNK = [
    "0",
    "-1",
    "x",
    "1.5",
    "",
    "1e3",
    "nan",
    "0x2",
    "--",
    "-99999999999999999999",
    " 1",
    "٢",
    "1_0",
    "+1",
]
"""Bad values for counts (plus a few odd spellings of small valid ones: " 1", "٢", "+1");
no large valid count, which would start a long job."""
INT_JUNK = ["-1", "abc", "2.0", "", "99999999999999999999999", "0", "1", "7", "all", "-"]
FLOAT_JUNK = ["nan", "inf", "-inf", "-1", "abc", "1e309", "-0", "1e-300", "", "2"]
ENV_JUNK = [
    "diffpolicy/Nope-v0",
    "ReachAround",
    "",
    "diffpolicy/ReachAround-v1",
    "CartPole-v1",
    "diffpolicy/ReachAround-v0\n",
    "../../etc/passwd",
    "-",
]
JUNK_TOKENS = [
    "extra",
    "--bogus",
    "--bogus=1",
    "-x",
    "--",
    "-",
    "key=value",
    "train.steps",
    "=",
    "--out",
    "--json",
    "--episodes",
    "--mode",
    "@file",
    "\n",
    "ünï",
    "x" * 300,
    "--help",
    "-h",
    "--quick",
    "--append",
    "--only",
    "latency",
]
OVERRIDE_JUNK = [
    "train.stepz=3",
    "train.steps=abc",
    "train.steps=-1",
    "train.steps=0",
    "train.steps=1e3",
    "train.steps=2.5",
    "train.steps=[]",
    "train.steps=null",
    "data.horizon=1000000",
    "data.horizon=13",
    "data.horizon=0",
    "model.down_dims=[1000000000000]",
    "model.down_dims=[]",
    "model.down_dims=[8,8,8,8,8,8,8,8,8]",
    "model.down_dims=abc",
    "model.n_groups=0",
    "model.kernel_size=4",
    "policy.type=nope",
    "policy.type=mse",
    "policy.type=gmm",
    "policy.condition=mode",
    "data.obs_keys=[pixels]",
    "data.goal_key=nope",
    "data.goal_key=null",
    "train.lr=-1",
    "train.lr=nan",
    "train.lr=1e30",
    "train.batch_size=0",
    "train.device=tpu",
    "train.precision=fp8",
    "a.b.c=1",
    "train=3",
    "=3",
    ".=1",
    "nonsense",
    "data.val_fraction=1",
    "data.val_fraction=0.99",
    "data.max_episodes=1",
    "data.n_obs_steps=64",
    "control.n_action_steps=99",
    "eval.envs=100000",
    "env_id=Nope",
    "policy.num_inference_steps=0",
    "dims.obs_dim=3",
    "train.checkpoint_every=0",
    "train.val_every=1",
    "policy.teacher=/nonexistent",
    "policy.gmm_components=300",
    "train.steps=200000000",
    "train.batch_size=2000000",
    "data.split_seed=-5",
    "eval.seed=x",
    "control.temporal_ensemble=-1",
    "train.betas=[0.9]",
    "model.cond_embed_dim=99999",
]
"""Overrides that are invalid, or valid and cheap (never a valid expensive one)."""


@dataclass
class Tok:
    text: str
    kind: str  # cmd, flag, count, int, float, env, choice, in:<kind>, out-file, out-dir,
    #            override, cap, word


def _t(*pairs) -> list[Tok]:
    return [Tok(str(a), b) for a, b in pairs]


class Fuzzer:
    """Seeded generator of command lines for every subcommand: a cheap valid line, then 0-3
    mutations (bad values, missing and extra tokens, foreign and unusable paths, junk
    overrides, unknown commands). `expensive=False` (the test's sample) leaves out the
    valid lines that take seconds (eval reports and videos, distillation)."""

    COMMANDS = (
        "collect",
        "info",
        "train",
        "resume",
        "distill",
        "eval",
        "quickstart",
        "modes",
        "bench",
        "none",
    )

    def __init__(self, world: World, seed: int, expensive: bool = True):
        self.w, self.rng, self.expensive = world, random.Random(seed), expensive

    # --------------------------------------------------------------------- valid templates
    def collect(self, r):
        env = ENVS[0] if r.random() < 0.7 else r.choice(ENVS)
        toks = _t(
            ("collect", "cmd"),
            (env, "env"),
            ("--episodes", "flag"),
            (r.choice("12"), "count"),
            ("--out", "flag"),
            (self.w.fresh(".hdf5"), "out-file"),
        )
        if r.random() < 0.3:
            toks += _t(("--seed", "flag"), (r.randint(0, 50), "int"))
        if r.random() < 0.2:
            toks += _t(("--mode", "flag"), (r.choice("01"), "int"))
        if r.random() < 0.2:
            toks += _t(("--keep-failures", "flag"))
        if r.random() < 0.2:
            toks += _t(("--workers", "flag"), ("1", "count"))
        if r.random() < 0.3:  # append to a copy of a good file (or to the fresh path: refused)
            if r.random() < 0.7:
                toks[5].text = self.w.copy_of("reach.hdf5")
            toks += _t(("--append", "flag"))
        return toks

    def info(self, r):
        toks = _t(("info", "cmd"), (self.w.input_path(r, "demos"), "in:demos"))
        if r.random() < 0.3:
            toks += _t(("--json", "flag"), (self.w.fresh(".json"), "out-file"))
        if r.random() < (0.2 if self.expensive else 0.05):
            toks += _t(("--plot", "flag"), (self.w.fresh(".png"), "out-file"))
        return toks

    def train(self, r):
        toks = _t(
            ("train", "cmd"),
            (self.w.input_path(r, "config"), "in:config"),
            ("--dataset", "flag"),
            (self.w.input_path(r, "demos"), "in:demos"),
            ("--out", "flag"),
            (self.w.fresh(), "out-dir"),
            ("train.steps=2", "cap"),
        )
        if r.random() < 0.3:
            toks.append(
                Tok(
                    r.choice(
                        [
                            "policy.type=mse",
                            "policy.type=gmm",
                            "train.batch_size=8",
                            "data.horizon=16",
                            "model.down_dims=[8,16]",
                        ]
                    ),
                    "override",
                )
            )
        return toks

    def resume(self, r):
        run = self.w.input_path(r, "run")
        toks = _t(
            ("train", "cmd"),
            ("--resume", "flag"),
            (run, "in:run"),
            (f"train.steps={r.randint(1, 4)}", "cap"),
        )
        if r.random() < 0.3:
            toks.append(
                Tok(
                    r.choice(
                        [
                            "model.down_dims=[8,16]",
                            "data.horizon=16",
                            "policy.type=mse",
                            "train.lr=3e-4",
                        ]
                    ),
                    "override",
                )
            )
        return toks

    def distill(self, r):
        toks = _t(
            ("distill", "cmd"),
            (self.w.input_path(r, "run"), "in:run"),
            ("--out", "flag"),
            (self.w.fresh(), "out-dir"),
            ("train.steps=1", "cap"),
        )
        if r.random() < 0.3:
            toks += _t(("--dataset", "flag"), (self.w.input_path(r, "demos"), "in:demos"))
        if not self.expensive:  # a valid distillation takes seconds: keep only broken ones
            toks.insert(1, Tok(r.choice(["--bogus", "extra", "--dataset"]), "word"))
        return toks

    def eval(self, r):
        toks = _t(
            ("eval", "cmd"),
            (self.w.input_path(r, "run"), "in:run"),
            ("--episodes", "flag"),
            ("1", "count"),
            ("--envs", "flag"),
            (r.choice("12"), "count"),
        )
        options = [
            (("--json", "flag"), (self.w.fresh(".json"), "out-file")),
            (("--mode", "flag"), (r.choice(["0", "all", "1"]), "int")),
            (("--instruction", "flag"), ("go around the left side", "word")),
            (("--instructions", "flag"), (r.choice(["train", "heldout"]), "choice")),
            (("--guidance", "flag"), (r.choice(["0", "1.5"]), "float")),
            (("--sampler", "flag"), (r.choice(["ddpm", "ddim", "dpmpp"]), "choice")),
            (("--steps", "flag"), (r.choice("124"), "count")),
            (("--action-steps", "flag"), (r.choice("124"), "count")),
            (("--seed", "flag"), (r.randint(0, 9), "int")),
        ]
        for pair in r.sample(options, r.randint(0, 3)):
            toks += _t(*pair)
        if r.random() < (0.15 if self.expensive else 0.0):
            flag = r.choice(["--report", "--video"])
            toks += _t((flag, "flag"), (self.w.fresh(), "out-dir"))
        if not self.expensive and r.random() < 0.6:  # rollouts cost ~0.5 s: mostly broken ones
            toks.insert(2, Tok(r.choice(["--bogus", "--envs", "--episodes", "--mode"]), "word"))
        return toks

    def quickstart(self, r):
        return _t(
            ("quickstart", "cmd"),
            ("--out", "flag"),
            (self.w.fresh(), "out-dir"),
            ("--episodes", "flag"),
            ("2", "count"),
            ("--eval-episodes", "flag"),
            ("1", "count"),
            ("train.steps=2", "cap"),
        )

    def modes(self, r):
        toks = _t(
            ("modes", "cmd"), ("--quick", "flag"), ("--out", "flag"), (self.w.fresh(), "out-dir")
        )
        if r.random() < 0.5:
            toks += _t(("--json", "flag"), (self.w.fresh(".json"), "out-file"))
        return toks

    def bench(self, r):
        toks = _t(("bench", "cmd"), ("--quick", "flag"))
        if r.random() < 0.5:
            toks += _t(("--json", "flag"), (self.w.fresh(".json"), "out-file"))
        if r.random() < 0.5:
            toks += _t(("--only", "flag"), (r.choice(["latency", "train", "collect"]), "choice"))
        return toks

    def none(self, r):
        return [
            Tok(t, "word")
            for t in r.choice(
                [
                    [],
                    ["--help"],
                    ["-h"],
                    ["help"],
                    ["--version"],
                    [""],
                    ["trian", "x"],
                    ["COLLECT"],
                    ["evaluate", "run"],
                    ["-x"],
                    ["--", "info"],
                    ["info"],
                    ["train"],
                    ["collect"],
                    ["eval"],
                    ["distill"],
                    ["collect", "--help"],
                    ["train", "--resume"],
                ]
            )
        ]

    # ---------------------------------------------------------------------------- mutations
    def mutate(self, toks: list[Tok], r) -> list[Tok]:
        kind = r.choice(
            [
                "value",
                "value",
                "drop",
                "insert",
                "path",
                "path",
                "command",
                "override",
                "override",
                "dup",
                "truncate",
                "swap",
            ]
        )
        values = [
            i for i, t in enumerate(toks) if t.kind in ("count", "int", "float", "env", "choice")
        ]
        paths = [i for i, t in enumerate(toks) if t.kind.startswith(("in:", "out-"))]
        if kind == "value" and values:
            i = r.choice(values)
            pool = {
                "count": COUNT_JUNK,
                "int": INT_JUNK,
                "float": FLOAT_JUNK,
                "env": ENV_JUNK,
                "choice": ["x", "", "TRAIN", "latency,train", "ddim "],
            }[toks[i].kind]
            toks[i] = Tok(r.choice(pool), "word")
        elif kind == "drop" and toks:
            del toks[r.randrange(len(toks))]
        elif kind == "insert":
            toks.insert(r.randint(1 if toks else 0, len(toks)), Tok(r.choice(JUNK_TOKENS), "word"))
        elif kind == "path" and paths:
            i = r.choice(paths)
            t = toks[i]
            if t.kind.startswith("in:"):
                text = self.w.input_path(r, t.kind[3:])
            else:
                text = self.w.bad_output(r, file=t.kind == "out-file")
            toks[i] = Tok(text, t.kind)
        elif kind == "command" and toks:
            toks[0] = Tok(
                r.choice(
                    [
                        "collect",
                        "info",
                        "train",
                        "distill",
                        "eval",
                        "quickstart",
                        "modes",
                        "bench",
                        "trian",
                        "Info",
                        "",
                        "-",
                    ]
                ),
                "word",
            )
        elif kind == "override" and toks and toks[0].text in ("train", "distill", "quickstart"):
            toks.append(Tok(r.choice(OVERRIDE_JUNK), "override"))
        elif kind == "dup" and len(toks) > 2:
            i = r.randrange(1, len(toks))
            toks.insert(i, Tok(toks[i].text, "word"))
        elif kind == "truncate" and toks:
            toks = toks[: r.randrange(len(toks))]
        elif kind == "swap" and len(toks) > 2:
            i = r.randrange(1, len(toks) - 1)
            toks[i], toks[i + 1] = toks[i + 1], toks[i]
        return toks

    def line(self) -> list[str]:
        r = self.rng
        command = r.choice(self.COMMANDS)
        toks = getattr(self, command)(r)
        for _ in range(r.choice([0, 1, 1, 2, 2, 3])):
            toks = self.mutate(toks, r)
        return [t.text for t in toks]

    def lines(self, n: int) -> list[list[str]]:
        return [self.line() for _ in range(n)]


def stub_expensive_work(monkeypatch=None):
    """Replace the study, benchmark and quickstart pipelines (minutes of valid work) by stubs
    that return at once; with `monkeypatch` (pytest) the originals come back after the test,
    else returns a function that restores them."""
    import diffpolicy.bench
    import diffpolicy.modes
    import diffpolicy.quickstart

    stubs = [
        (diffpolicy.modes, "run_study", lambda quick=False, out_dir="", seed=0: {"stub": True}),
        (diffpolicy.bench, "run_bench", lambda quick=False, only=(): {"stub": True}),
        (diffpolicy.quickstart, "quickstart", lambda *a, **kw: {}),
    ]
    if monkeypatch is not None:
        for module, name, fn in stubs:
            monkeypatch.setattr(module, name, fn)
        return None
    saved = [(m, n, getattr(m, n)) for m, n, _ in stubs]
    for module, name, fn in stubs:
        setattr(module, name, fn)

    def restore():
        for module, name, fn in saved:
            setattr(module, name, fn)

    return restore


class HalfThenFull:
    """A file whose write() stores half of the data, then fails as a full disk does."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        data = data if isinstance(data, str) else bytes(data)
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()
