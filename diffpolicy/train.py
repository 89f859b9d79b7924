"""Training: one visible loop over a loss module.

    batch -> loss -> backward -> clip -> step -> LR -> EMA -> log -> validate/checkpoint

The loss is `policy.compute_loss` by default; a layer on top passes its own (`make_loss`, as
few-step distillation does in distill.py), so this module knows nothing of teachers.
Runs on CPU, one CUDA GPU (TF32; bf16 autocast with train.precision=bf16), or several
(DistributedDataParallel: NCCL on GPUs, gloo on CPU; rank 0 alone logs and checkpoints).
Resuming restores weights, EMA, optimizer, RNG and step, so a resumed run ends with the same
weights as an uninterrupted one. Batches are a pure function of (seed, step, rank): every epoch
is a seeded permutation split across ranks (a stateless distributed sampler). SIGINT and
SIGTERM (a scheduler's preemption) write a checkpoint and stop. A finished process logs where
its wall time went (`time_s`: set-up, steps, validation and logging, checkpoints); the logged
samples/s count training steps only.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import json
import math
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from diffpolicy.checkpoint import (
    checkpoint_dirs,
    load_run_config,
    load_state_into,
    read_metrics,
    read_train_state,
    read_weights,
    save_checkpoint,
)
from diffpolicy.config import Config, config_to_dict, save_config
from diffpolicy.dataset import load_demos, make_windows, normalizer_data, split_episodes
from diffpolicy.errors import ConfigError, DatasetError, UserError
from diffpolicy.files import write_text, writer_lock

Batch = dict[str, torch.Tensor]


# ------------------------------------------------------------------------------------ set-up


def setup_process(cfg: Config) -> tuple[int, int, torch.device]:
    """Join the process group under torchrun, pick the device and thread count.
    Returns (world size, rank, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and cfg.train.device != "cpu" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=DDP_TIMEOUT_S))
    rank = dist.get_rank() if dist.is_initialized() else 0
    device = pick_device(cfg.train.device)
    if device.type == "cuda":  # fp32 weights; TF32 tensor cores for matmuls and convs
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if device.type == "cpu":
        torch.set_num_threads(cfg.train.threads or max(1, (os.cpu_count() or 1) // world))
    return world, rank, device


DDP_TIMEOUT_S = 300
"""A collective that waits longer than this (a rank died or hangs) fails instead of hanging."""


def pick_device(name: str) -> torch.device:
    """ "auto" | "cpu" | "cuda" -> the device of this process (its LOCAL_RANK's GPU under DDP)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device=cuda but no CUDA device is available")
    if name == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(name)


def lr_at(step: int, cfg: Config) -> float:
    """Linear warmup, then cosine decay to 0 at train.steps."""
    t = cfg.train
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    progress = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)
    return t.lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def ema_decay(step: int, cfg: Config) -> float:
    """EMA warmup of Diffusion Policy: 1 - (1 + step)^-power, capped at ema_max_decay."""
    return min(cfg.train.ema_max_decay, 1.0 - (1.0 + step) ** -cfg.train.ema_power)


def batch_indices(step: int, n: int, batch: int, seed: int, rank: int, world: int) -> torch.Tensor:
    """Indices of this rank's batch at `step`: epochs are seeded permutations of range(n),
    dealt round-robin to ranks; batches run on across epoch boundaries. (batch,) int64."""
    per_rank = max(1, n // world)
    start, end = step * batch, (step + 1) * batch
    parts = []
    for epoch in range(start // per_rank, (end - 1) // per_rank + 1):
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        mine = torch.randperm(n, generator=g)[rank::world][:per_rank]
        lo = max(start - epoch * per_rank, 0)
        hi = min(end - epoch * per_rank, per_rank)
        parts.append(mine[lo:hi])
    return torch.cat(parts)


def prepare_data(cfg: Config, device: torch.device):
    """Load demos, split by episode, build windows -> (train tensors, val tensors, demos)."""
    d = cfg.data
    if not d.dataset:
        raise UserError("no dataset: pass --dataset FILE or set data.dataset in the config")
    keys = tuple(dict.fromkeys(d.obs_keys + ((d.goal_key,) if d.goal_key else ()) + d.image_keys))
    demos = load_demos(d.dataset, obs_keys=keys)
    check_env_id(cfg, demos)
    if d.max_episodes:
        demos.episodes = demos.episodes[: d.max_episodes]
    train_ids, val_ids = split_episodes(len(demos.episodes), d.val_fraction, d.split_seed)

    def tensors(ids: np.ndarray) -> dict[str, torch.Tensor]:
        w = make_windows(demos, ids, d.obs_keys, d.goal_key, d.n_obs_steps, d.horizon, d.image_keys)
        return {k: torch.from_numpy(v).to(device) for k, v in w.items()}

    train, val = tensors(train_ids), tensors(val_ids) if len(val_ids) else None
    for ep in demos.episodes:  # the windows hold the only copy of the camera frames now
        for k in d.image_keys:
            ep.obs.pop(k, None)
    grounded = cfg.policy.condition == "language" and cfg.policy.reads_mode
    if cfg.policy.reads_mode and (train["mode"] < 0).any():
        raise DatasetError(
            f"policy.condition={cfg.policy.condition} needs every episode to have a mode label"
            + (" (or policy.language_grounding=none)" if grounded else "")
        )
    if cfg.policy.condition == "language":
        instructions = [e.instruction for e in demos.episodes]
        if not all(instructions):
            raise DatasetError("policy.condition=language needs an instruction on every episode")
    if cfg.policy.condition == "language" and not grounded:
        from diffpolicy import language

        # (N_episodes, E): the encoder runs once per unique instruction, never per batch
        table = torch.from_numpy(language.embed(instructions, cfg.policy.language_model))
        for split in (train, val):
            if split is not None:
                split["lang"] = table[split["episode"].cpu()].to(device)
    return train, val, demos


def check_env_id(cfg: Config, demos) -> None:
    """ConfigError when the file's env (env_args.env_name) is a gymnasium id (registered or
    module:EnvId) other than cfg.env_id: evaluation would build another env than the demos'."""
    import gymnasium

    import envs  # noqa: F401  (registers the diffpolicy ids)

    name = demos.env_id
    if name and name != cfg.env_id and (":" in name or name in gymnasium.registry):
        raise ConfigError(
            f"{cfg.data.dataset} holds demos of {name}, but the config says env_id={cfg.env_id}:"
            f" set env_id: {name} (or pass env_id={name})"
        )


def take(data: Batch, idx: torch.Tensor) -> Batch:
    """Rows `idx` of every window tensor (the episode index stays behind); camera frames are
    gathered per window: `<key>` (B, To, H, W, 3) uint8 for each `frames/<key>`."""
    batch = {
        k: v[idx]
        for k, v in data.items()
        if k not in ("episode", "frame_index") and not k.startswith("frames/")
    }
    if "frame_index" in data:
        rows = data["frame_index"][idx]  # (B, To)
        for k, v in data.items():
            if k.startswith("frames/"):
                batch[k[len("frames/") :]] = v[rows]
    return batch


def image_dims(train: Batch, image_keys: tuple[str, ...]) -> dict[str, int]:
    """image_height / image_width shared by every camera key (DatasetError if they differ)."""
    if not image_keys:
        return {}
    shapes = {k: tuple(train[f"frames/{k}"].shape[1:]) for k in image_keys}
    if len(set(shapes.values())) > 1:
        raise DatasetError(f"camera keys have different frame shapes: {shapes}; use one size")
    h, w, _ = next(iter(shapes.values()))
    return {"image_height": int(h), "image_width": int(w)}


def data_dims(cfg: Config, train: Batch, demos) -> dict:
    """What the model's shapes depend on, measured from the training windows (and, for a
    language run, the sentence encoder's width)."""
    from diffpolicy.grounding import mode_factors

    lang_dim = 0
    if cfg.policy.condition == "language":
        from diffpolicy import language

        lang_dim = int(
            language.embed([demos.episodes[0].instruction], cfg.policy.language_model).shape[-1]
        )
    image_keys = cfg.data.image_keys
    return {
        **image_dims(train, image_keys),
        "obs_dim": int(train["obs"].shape[-1]),
        "action_dim": int(train["action"].shape[-1]),
        "goal_dim": int(train["goal"].shape[-1]) if "goal" in train else 0,
        "num_modes": int(demos.num_modes),
        "lang_dim": lang_dim,
        **(
            {
                "mode_factors": mode_factors(
                    list(demos.mode_names) or [str(k) for k in range(demos.num_modes)]
                )
            }
            if lang_dim
            else {}
        ),
    }


def build_policy(
    cfg: Config, train: Batch, demos, device, init_state: dict | None, resume: bool = False
) -> nn.Module:
    """A fresh policy with its normalizer (and language statistics) fit to the training data,
    optionally started from `init_state` (a state dict with the same keys). The grounding
    classifier is fit only for a new run: a resumed or initialized one loads it."""
    from diffpolicy.policies import make_policy

    policy = make_policy(cfg).to(device)
    policy.normalizer.fit(normalizer_data({k: v.cpu().numpy() for k, v in train.items()}))
    policy.normalizer.to(device)
    if hasattr(policy.cond_encoder, "grounder"):
        if not resume and init_state is None:
            fit_grounding(cfg, policy.cond_encoder.grounder, demos)
        policy.cond_encoder.grounder.requires_grad_(False)
    elif cfg.policy.condition == "language":  # standardize with each instruction weighted once
        from diffpolicy import language

        texts = [e.instruction for e in demos.episodes]
        unique = language.unique_embeddings(texts, cfg.policy.language_model)  # (U, E)
        policy.cond_encoder.fit_language(torch.from_numpy(unique).to(device))
    if init_state is not None:
        load_state_into(policy, init_state, "the initial weights")
    return policy


def fit_grounding(cfg: Config, grounder: nn.Module, demos) -> dict:
    """Fit the instruction -> mode classifier on every episode's instruction and paraphrases,
    with the task's off-task sentences (envs/instructions.py) as the refusal class, and a
    misspelled copy of a random share (policy.grounding_misspelled) of both (`misspell`: people
    type "rigth"); on CPU, then back to the grounder's device. Prints and returns the fit's
    summary."""
    import envs.instructions as phrasing
    from diffpolicy.grounding import fit_grounder, task_of

    pairs = {t: e.mode for e in demos.episodes for t in (e.instruction, *e.paraphrases)}
    rng = np.random.default_rng(cfg.train.seed)
    off_task = phrasing.off_task_sentences(task_of(cfg.env_id, cfg.env_kwargs), rng, 1200)
    slip = [t for t in (*pairs, *off_task) if rng.random() < cfg.policy.grounding_misspelled]
    slipped = {t: phrasing.misspell(t, rng) for t in slip}
    known = {*pairs, *off_task}
    copies = {c: t for t, c in slipped.items() if c not in known}  # copy -> its original
    texts = [*pairs, *(c for c, t in copies.items() if t in pairs)]
    labels = [*pairs.values(), *(pairs[t] for t in copies.values() if t in pairs)]
    off_task = off_task + [c for c, t in copies.items() if t not in pairs]
    device = next(grounder.parameters()).device
    info = fit_grounder(
        grounder.cpu(),
        texts,
        labels,
        off_task,
        cfg.policy.language_model,
        seed=cfg.train.seed,
        steps=cfg.policy.grounding_steps,
        copies=copies,
    )
    grounder.to(device)
    print(
        f"grounding: {info['texts']} phrasings, held-out accuracy {info['holdout_accuracy']:.3f}, "
        f"temperature {info['temperature']:.2f}"
    )
    return info


def make_optimizer(policy: nn.Module, cfg: Config, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and kernels only (not biases or norm scales)."""
    params = [p for p in policy.parameters() if p.requires_grad]  # not the fitted grounder
    decay = [p for p in params if p.ndim >= 2]
    other = [p for p in params if p.ndim < 2]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.train.weight_decay},
            {"params": other, "weight_decay": 0.0},
        ],
        lr=cfg.train.lr,
        betas=cfg.train.betas,
        fused=device.type == "cuda",
    )


def restore(run_dir: Path, policy, ema, optimizer, device: torch.device) -> int:
    """Load the newest checkpoint of `run_dir` into the training state; return its step."""
    dirs = checkpoint_dirs(run_dir)
    if not dirs:  # rank 0 checked; another rank may see none on a non-shared disk
        raise UserError(f"nothing to resume in {run_dir} (no complete checkpoint)")
    load_state_into(policy, read_weights(dirs[-1], "raw")[0], str(dirs[-1]))
    load_state_into(ema, read_weights(dirs[-1], "ema")[0], str(dirs[-1]))
    state = read_train_state(dirs[-1])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng_cpu"])
    if device.type == "cuda" and "rng_cuda" in state:
        torch.cuda.set_rng_state(state["rng_cuda"], device)
    return int(state["step"])


class PolicyLoss(nn.Module):
    """forward(batch) = policy.compute_loss(batch): the loss as a module, which DDP wraps."""

    def __init__(self, policy: nn.Module):
        super().__init__()
        self.policy = policy

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.policy.compute_loss(batch)


def check_run_dir(run_dir: Path, cfg: Config, resume: bool) -> None:
    """A new run needs a directory without checkpoints; a resumed one a checkpoint, and a
    config whose data, model and loss-defining policy keys are those it was trained with."""
    if not resume:
        if checkpoint_dirs(run_dir):
            raise UserError(
                f"{run_dir} already holds a trained run; use --resume {run_dir} or another --out"
            )
        return
    if not checkpoint_dirs(run_dir):
        raise UserError(f"nothing to resume in {run_dir} (no complete checkpoint)")
    saved = config_to_dict(load_run_config(run_dir))
    new = config_to_dict(cfg)
    differ = [
        f"{section}.{key}"
        for section, keys in FIXED_ON_RESUME.items()
        for key in (keys or new[section])
        if saved[section].get(key) != new[section].get(key)
        and not (section == "data" and key == "dataset")
    ]
    if differ:
        raise UserError(
            f"--resume {run_dir}: {', '.join(differ)} differ from the run's config.yaml; "
            "a run resumes with the data, model and objective it was trained with"
        )


FIXED_ON_RESUME = {
    "data": (),  # every key but the dataset's path
    "model": (),
    "policy": ("type", "num_train_timesteps", "beta_schedule", "prediction_type",
               "gmm_components", "gmm_min_std", "condition", "language_model", "teacher",
               "language_grounding", "grounding_members"),
}  # fmt: skip
"""Config keys that a resumed run may not change (an empty tuple: the whole section)."""


def drop_if_empty(run_dir: Path) -> None:
    """Remove a run directory this process created that holds nothing but its lock (training
    failed at set-up: bad data, a typo), so a failed command leaves nothing behind."""
    with contextlib.suppress(OSError):
        if [p.name for p in run_dir.iterdir()] == [".lock"]:
            (run_dir / ".lock").unlink()
            run_dir.rmdir()  # the lock's fd stays valid until it is closed


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any (one all-reduce of one number)."""
    x = torch.tensor([float(flag)], device=device)
    dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return bool(x.item())


class RunLog:
    """metrics.jsonl (and wandb) of rank 0; other ranks write nothing. On resume, lines past
    the checkpoint (and lines a kill cut short) are dropped first. A context manager."""

    def __init__(self, run_dir: Path, cfg: Config, rank: int, resume: bool, step: int):
        self.path, self.wb = run_dir / "metrics.jsonl", None
        self.active = rank == 0
        if not self.active:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        if self.path.exists():  # resume: lines past the step go; a new run: all (a killed run's)
            keep = [m for m in read_metrics(run_dir) if resume and _at_or_before(m, step)]
            write_text(self.path, "".join(json.dumps(m) + "\n" for m in keep))
        if cfg.train.wandb != "disabled":
            import wandb

            self.wb = wandb.init(
                project=cfg.train.wandb_project,
                mode=cfg.train.wandb,
                config=config_to_dict(cfg),
                dir=str(run_dir),
                name=run_dir.name,
            )

    def write(self, record: dict) -> None:
        if self.active and record:
            line = memoryview((json.dumps(record) + "\n").encode())
            with open(self.path, "ab", buffering=0) as f:
                end = f.seek(0, os.SEEK_END)
                try:
                    while line:
                        line = line[f.write(line) :]
                except OSError:  # a full disk: take back the part of the line written
                    f.truncate(end)
                    raise
            if self.wb is not None:
                self.wb.log(record, step=record["step"])

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc) -> None:
        if self.wb is not None:
            self.wb.finish()


def _at_or_before(record: dict, step: int) -> bool:
    s = record.get("step", 0)
    return isinstance(s, (int, float)) and s <= step


@contextlib.contextmanager
def stop_signals():
    """Within the block, SIGINT and SIGTERM set `stop["signal"]` instead of killing the
    process, so the loop can checkpoint first (every DDP rank: torchrun forwards the signal);
    the previous handlers come back after."""
    stop: dict = {"signal": None}

    def on_signal(signum, frame):
        stop["signal"] = signum

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def train_step(
    loss_fn: nn.Module,
    batch: Batch,
    policy: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    lr: float,
    ema_decay: float,
    grad_clip: float,
    autocast: contextlib.AbstractContextManager | None = None,
) -> torch.Tensor:
    """One optimizer step: loss -> backward -> clip -> step (at `lr`) -> EMA. Returns the loss;
    raises FloatingPointError (before touching the weights) when it is not finite."""
    with autocast or contextlib.nullcontext():
        loss = loss_fn(batch)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss ({loss.item()})")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(policy.parameters(), grad_clip)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    with torch.no_grad():
        torch._foreach_lerp_(list(ema.parameters()), list(policy.parameters()), 1.0 - ema_decay)
    return loss


@torch.no_grad()
def validation_loss(
    loss_fn: nn.Module, val: dict[str, torch.Tensor], batch: int, seed: int
) -> float:
    """Mean loss over the validation windows with fixed noise (comparable across steps)."""
    loss_fn.policy.eval()
    losses, n = 0.0, len(val["obs"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(0, n, batch):
            idx = torch.arange(i, min(i + batch, n), device=val["obs"].device)
            losses += loss_fn(take(val, idx)).item() * len(idx)
    loss_fn.policy.train()
    return losses / n


def ranks_in_sync(policy: nn.Module) -> tuple[bool, float]:
    """All-gather every rank's flattened weights; (identical?, max abs difference)."""
    flat = torch.cat([p.detach().float().reshape(-1) for p in policy.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    diff = max((g - gathered[0]).abs().max().item() for g in gathered)
    return diff == 0.0, diff


# ------------------------------------------------------------------------------------ the loop


def train(
    cfg: Config,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    make_loss: Callable[[nn.Module], nn.Module] = PolicyLoss,
    init_state: dict | None = None,
) -> Path:
    """Train the policy described by `cfg`; write the run directory `out_dir`; return it.

    make_loss(policy) -> module whose forward(batch) is the scalar loss (default: the policy's
    own `compute_loss`); init_state: initial weights of a new run (ignored on resume).
    Rank 0 holds the run directory's writer lock throughout: a second `train` into it fails.
    """
    from tqdm import tqdm

    t_start = time.perf_counter()
    t = cfg.train
    world, rank, device = setup_process(cfg)
    run_dir = Path(out_dir)
    created = rank == 0 and not run_dir.exists()
    held = contextlib.ExitStack()  # the run directory's lock, then the signal handlers
    try:
        if rank == 0:
            held.enter_context(writer_lock(run_dir, "run directory"))
            check_run_dir(run_dir, cfg, resume)
        train_data, val_data, demos = prepare_data(cfg, device)
        cfg = dataclasses.replace(
            cfg,
            dims=data_dims(cfg, train_data, demos),
            env_kwargs=cfg.env_kwargs or dict(demos.env_args.get("env_kwargs") or {}),
        )
        torch.manual_seed(t.seed + rank)
        policy = build_policy(cfg, train_data, demos, device, init_state, resume)
        ema = copy.deepcopy(policy).requires_grad_(False).eval()
        optimizer = make_optimizer(policy, cfg, device)
        step = restore(run_dir, policy, ema, optimizer, device) if resume else 0
        loss_fn, val_loss_fn = make_loss(policy), make_loss(ema)
        if world > 1:  # DDP hooks forward(): the loss module's gradients are all-reduced
            ids = [device.index] if device.type == "cuda" else None
            loss_fn = nn.parallel.DistributedDataParallel(loss_fn, device_ids=ids)
        log = held.enter_context(RunLog(run_dir, cfg, rank, resume, step))
        stop = held.enter_context(stop_signals())
        bf16 = device.type == "cuda" and t.precision == "bf16"
        autocast = torch.autocast("cuda", torch.bfloat16) if bf16 else None
        n_train, batch_size = len(train_data["obs"]), max(1, t.batch_size // world)
        quiet = not progress or rank != 0
        bar = held.enter_context(
            tqdm(total=t.steps, initial=step, disable=quiet, desc="train", dynamic_ncols=True)
        )
        t_log, logged_at = time.perf_counter(), step
        phases = ("steps_s", "validate_log_s", "checkpoint_s")  # then accumulated per step
        spent = {"setup_s": t_log - t_start} | dict.fromkeys(phases, 0.0)

        def checkpoint(at: int) -> None:
            if rank == 0:
                state = {"optimizer": optimizer.state_dict(), "rng_cpu": torch.get_rng_state()}
                if device.type == "cuda":
                    state["rng_cuda"] = torch.cuda.get_rng_state(device)
                save_checkpoint(run_dir, at, cfg, policy, ema, state)

        while step < t.steps:
            t0 = time.perf_counter()
            idx = batch_indices(step, n_train, batch_size, t.seed, rank, world)
            batch = take(train_data, idx.to(device))
            lr = lr_at(step, cfg)
            try:
                loss = train_step(
                    loss_fn, batch, policy, ema, optimizer, lr, ema_decay(step, cfg),
                    t.grad_clip, autocast,
                )  # fmt: skip
            except FloatingPointError as e:
                last = checkpoint_dirs(run_dir)
                where = f"last good checkpoint: {last[-1]}" if last else "no checkpoint written"
                raise UserError(f"{e} at step {step}; {where}") from None
            step += 1
            bar.update(1)

            record = {}
            if step % t.log_every == 0 or step == t.steps:
                now = time.perf_counter()
                sps = (step - logged_at) * t.batch_size / max(now - t_log, 1e-9)
                t_log, logged_at = now, step
                record = {"step": step, "loss": loss.item(), "lr": lr, "samples_per_s": sps}
                bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.1e}", sps=f"{sps:.0f}")
            stopping = any_rank(stop["signal"] is not None, device) if world > 1 else stop["signal"]
            validating = val_data is not None and (step % t.val_every == 0 or step == t.steps)
            saving = step % t.checkpoint_every == 0 or step == t.steps or stopping
            if device.type == "cuda" and (validating or saving):
                torch.cuda.synchronize(device)  # the step's queued kernels count as the step's
            t1 = time.perf_counter()
            spent["steps_s"] += t1 - t0
            if validating:
                record["step"] = step
                record["val_loss"] = validation_loss(val_loss_fn, val_data, 1024, t.seed)
            log.write(record)
            t2 = time.perf_counter()
            spent["validate_log_s"] += t2 - t1
            if saving:
                checkpoint(step)
            spent["checkpoint_s"] += time.perf_counter() - t2
            t_log += time.perf_counter() - t1  # samples/s counts training steps only
            if stopping:
                log.write({"step": step, "time_s": spent})
                bar.write(f"interrupted: checkpoint written at step {step}; --resume {run_dir}")
                raise KeyboardInterrupt
        log.write({"step": step, "time_s": spent})  # where this process's wall time went
        if world > 1:
            in_sync, diff = ranks_in_sync(policy)
            sync = {"ddp_ranks_in_sync": in_sync, "world_size": world, "max_param_diff": diff}
            log.write({"step": step, **sync})
            dist.barrier()  # leave together: no rank tears its sockets down under another's op
    except RuntimeError as e:
        if world > 1 and (isinstance(e, dist.DistError) or "gloo" in str(e) or "NCCL" in str(e)):
            last = checkpoint_dirs(run_dir)
            where = f"last checkpoint: {last[-1]}" if last else "no checkpoint written"
            raise UserError(
                f"rank {rank}: a collective failed, another rank died or hangs "
                f"({str(e).strip()[:300]}); {where}"
            ) from None
        raise
    finally:
        if created:  # still under the lock
            drop_if_empty(run_dir)
        held.close()
        if dist.is_initialized():
            dist.destroy_process_group()
    return run_dir
