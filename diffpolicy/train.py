"""Training: one visible loop.

    batch -> loss -> backward -> clip -> step -> LR -> EMA -> log -> validate/checkpoint

Runs on CPU, one CUDA GPU (TF32; bf16 autocast with train.precision=bf16), or
(DistributedDataParallel: NCCL on GPUs, gloo on CPU; rank 0 alone logs and checkpoints).
Resuming restores weights, EMA, optimizer, RNG and step, so a resumed run ends with the same
weights as an uninterrupted one. Batches are a pure function of (seed, step, rank): every epoch
is a seeded permutation split across ranks (a stateless distributed sampler).
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import time
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
from diffpolicy.errors import DatasetError, UserError


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device=cuda but no CUDA device is available")
    if name == "cuda" and dist.is_initialized():
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
    keys = tuple(dict.fromkeys(d.obs_keys + ((d.goal_key,) if d.goal_key else ())))
    demos = load_demos(d.dataset, obs_keys=keys)
    if d.max_episodes:
        demos.episodes = demos.episodes[: d.max_episodes]
    train_ids, val_ids = split_episodes(len(demos.episodes), d.val_fraction, d.split_seed)

    def tensors(ids: np.ndarray) -> dict[str, torch.Tensor]:
        w = make_windows(demos, ids, d.obs_keys, d.goal_key, d.n_obs_steps, d.horizon)
        return {k: torch.from_numpy(v).to(device) for k, v in w.items()}

    train, val = tensors(train_ids), tensors(val_ids) if len(val_ids) else None
    if cfg.policy.condition == "mode" and (train["mode"] < 0).any():
        raise DatasetError("policy.condition=mode needs every episode to have a mode label")
    if cfg.policy.condition == "language":
        from diffpolicy import language

        instructions = [e.instruction for e in demos.episodes]
        if not all(instructions):
            raise DatasetError("policy.condition=language needs an instruction on every episode")
        # (N_episodes, E): the encoder runs once per unique instruction, never per batch
        table = torch.from_numpy(language.embed(instructions, cfg.policy.language_model))
        for split in (train, val):
            if split is not None:
                split["lang"] = table[split["episode"].cpu()].to(device)
    return train, val, demos


def _before(record: dict, step: int) -> bool:
    s = record.get("step", 0)
    return isinstance(s, (int, float)) and s <= step


class LossModule(nn.Module):
    """forward(batch) = policy.compute_loss(batch): the loss as a module, which DDP wraps."""

    def __init__(self, policy: nn.Module):
        super().__init__()
        self.policy = policy

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.policy.compute_loss(batch)


def take(data: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v[idx] for k, v in data.items() if k != "episode"}


def set_dims(cfg: Config, train: dict[str, torch.Tensor], demos) -> None:
    cfg.dims = {
        "obs_dim": int(train["obs"].shape[-1]),
        "action_dim": int(train["action"].shape[-1]),
        "goal_dim": int(train["goal"].shape[-1]) if "goal" in train else 0,
        "num_modes": int(demos.num_modes),
        "lang_dim": int(train["lang"].shape[-1]) if "lang" in train else 0,
        "lang_instructions": len({e.instruction for e in demos.episodes}) if "lang" in train else 0,
    }


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


def train(
    cfg: Config,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Train the policy described by `cfg`; write the run directory `out_dir`; return it."""
    from tqdm import tqdm

    from diffpolicy.policies import make_policy

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and cfg.train.device != "cpu" else "gloo"
        dist.init_process_group(backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    device = pick_device(cfg.train.device)
    if device.type == "cuda":  # fp32 weights; TF32 tensor cores for matmuls and convs
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if device.type == "cpu":
        threads = cfg.train.threads or max(1, (os.cpu_count() or 1) // world)
        torch.set_num_threads(threads)
    run_dir = Path(out_dir)
    if rank == 0 and not resume and run_dir.exists() and checkpoint_dirs(run_dir):
        raise UserError(
            f"{run_dir} already holds a trained run; use --resume {run_dir} or another --out"
        )

    train_data, val_data, demos = prepare_data(cfg, device)
    set_dims(cfg, train_data, demos)
    torch.manual_seed(cfg.train.seed + rank)
    policy = make_policy(cfg).to(device)
    policy.normalizer.fit(
        {
            k: v
            for k, v in normalizer_data({k: v.cpu().numpy() for k, v in train_data.items()}).items()
        }
    )
    policy.normalizer.to(device)
    if cfg.policy.condition == "language":  # standardize with each instruction weighted once
        from diffpolicy import language

        texts = [e.instruction for e in demos.episodes]
        unique = language.unique_embeddings(texts, cfg.policy.language_model)  # (U, E)
        policy.cond_encoder.fit_language(torch.from_numpy(unique).to(device))
    teacher = None
    if cfg.policy.teacher:  # few-step distillation: start from the teacher's weights
        from diffpolicy import distill

        teacher, teacher_cfg = distill.load_teacher(cfg.policy.teacher, device)
        distill.check_student(cfg, teacher_cfg)
        load_state_into(policy, teacher.state_dict(), cfg.policy.teacher)

    def make_loss(p: nn.Module) -> nn.Module:
        return LossModule(p) if teacher is None else distill.DistillLoss(p, teacher)

    ema = copy.deepcopy(policy).requires_grad_(False).eval()
    decay_params = [p for n, p in policy.named_parameters() if p.ndim >= 2]
    other_params = [p for n, p in policy.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay_params, "weight_decay": cfg.train.weight_decay},
            {"params": other_params, "weight_decay": 0.0},
        ],
        lr=cfg.train.lr,
        betas=cfg.train.betas,
        fused=device.type == "cuda",
    )
    step = 0
    if resume:
        dirs = checkpoint_dirs(run_dir)
        if not dirs:
            raise UserError(f"nothing to resume in {run_dir} (no complete checkpoint)")
        raw_state, _ = read_weights(dirs[-1], "raw")
        ema_state, _ = read_weights(dirs[-1], "ema")
        load_state_into(policy, raw_state, str(dirs[-1]))
        load_state_into(ema, ema_state, str(dirs[-1]))
        state = read_train_state(dirs[-1])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng_cpu"])
        if device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"], device)
        step = int(state["step"])
    loss_fn = make_loss(policy)
    if world > 1:  # DDP hooks forward(): the loss module's gradients are all-reduced
        loss_fn = nn.parallel.DistributedDataParallel(
            loss_fn, device_ids=[device.index] if device.type == "cuda" else None
        )
    val_loss_fn = make_loss(ema)

    metrics_path = run_dir / "metrics.jsonl"
    wb = None
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        if resume and metrics_path.exists():  # drop lines past the checkpoint we resume from
            # (and lines a kill cut short: read_metrics skips what is not a JSON object)
            keep = [json.dumps(m) for m in read_metrics(run_dir) if _before(m, step)]
            tmp = metrics_path.with_name(f".{metrics_path.name}.tmp")
            tmp.write_text("".join(ln + "\n" for ln in keep))
            os.replace(tmp, metrics_path)
        if cfg.train.wandb != "disabled":
            import wandb

            wb = wandb.init(
                project=cfg.train.wandb_project,
                mode=cfg.train.wandb,
                config=config_to_dict(cfg),
                dir=str(run_dir),
                name=run_dir.name,
            )

    stop = {"signal": None}

    def on_signal(signum, frame):
        stop["signal"] = signum

    old_handler = signal.signal(signal.SIGINT, on_signal) if rank == 0 else None
    n_train = len(train_data["obs"])
    per_rank_batch = max(1, cfg.train.batch_size // world)
    bf16 = device.type == "cuda" and cfg.train.precision == "bf16"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16)
    bar = tqdm(
        total=cfg.train.steps,
        initial=step,
        disable=not progress or rank != 0,
        desc="train",
        unit="step",
        dynamic_ncols=True,
    )
    t_log, best_val = time.perf_counter(), float("inf")

    def checkpoint(at: int) -> None:
        if rank != 0:
            return
        state = {"optimizer": optimizer.state_dict(), "rng_cpu": torch.get_rng_state()}
        if device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(device)
        save_checkpoint(run_dir, at, cfg, policy, ema, state)

    try:
        while step < cfg.train.steps:
            idx = batch_indices(step, n_train, per_rank_batch, cfg.train.seed, rank, world)
            batch = take(train_data, idx.to(device))
            with autocast:
                loss = loss_fn(batch)
            if not torch.isfinite(loss):
                last = checkpoint_dirs(run_dir)
                where = f"last good checkpoint: {last[-1]}" if last else "no checkpoint written"
                raise UserError(f"non-finite loss ({loss.item()}) at step {step}; {where}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.grad_clip > 0:
                nn.utils.clip_grad_norm_(policy.parameters(), cfg.train.grad_clip)
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
            with torch.no_grad():
                d = ema_decay(step, cfg)
                ema_p = list(ema.parameters())
                torch._foreach_lerp_(ema_p, list(policy.parameters()), 1.0 - d)
            step += 1
            bar.update(1)

            record = {}
            if step % cfg.train.log_every == 0 or step == cfg.train.steps:
                now = time.perf_counter()
                sps = cfg.train.log_every * cfg.train.batch_size / max(now - t_log, 1e-9)
                t_log = now
                record = {"step": step, "loss": loss.item(), "lr": lr, "samples_per_s": sps}
                bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.1e}", sps=f"{sps:.0f}")
            if val_data is not None and (
                step % cfg.train.val_every == 0 or step == cfg.train.steps
            ):
                record["step"] = step
                record["val_loss"] = validation_loss(val_loss_fn, val_data, 1024, cfg.train.seed)
                best_val = min(best_val, record["val_loss"])
            if record and rank == 0:
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
                if wb is not None:
                    wb.log(record, step=step)
            if step % cfg.train.checkpoint_every == 0 or step == cfg.train.steps:
                checkpoint(step)
            if stop["signal"] is not None:
                checkpoint(step)
                bar.write(
                    f"interrupted: checkpoint written at step {step}; "
                    f"continue with --resume {run_dir}"
                )
                raise KeyboardInterrupt
        if world > 1:
            in_sync, diff = ranks_in_sync(policy)
            if rank == 0:
                with open(metrics_path, "a") as f:
                    f.write(
                        json.dumps(
                            {
                                "step": step,
                                "ddp_ranks_in_sync": in_sync,
                                "world_size": world,
                                "max_param_diff": diff,
                            }
                        )
                        + "\n"
                    )
    finally:
        bar.close()
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
        if wb is not None:
            wb.finish()
        if dist.is_initialized():
            dist.destroy_process_group()
    return run_dir


def train_from_cli(
    config_path: str | None,
    dataset: str | None,
    out: str | None,
    resume: str | None,
    overrides: list[str],
    progress: bool = True,
) -> Path:
    """Resolve config/dataset/output for `diffpolicy train` and run `train`."""
    from diffpolicy.config import load_config

    if resume:
        cfg = load_run_config(resume, tuple(overrides))
        return train(cfg, resume, resume=True, progress=progress)
    if not config_path:
        raise UserError("train needs a CONFIG file (or --resume RUN_DIR)")
    cfg = load_config(config_path, overrides)
    if dataset:
        cfg.data.dataset = dataset
    if cfg.data.dataset:
        cfg.data.dataset = str(Path(cfg.data.dataset).resolve())
    out_dir = Path(out) if out else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    return train(cfg, out_dir, progress=progress)
