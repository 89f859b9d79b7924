"""Few-step distillation: a student UNet learns the teacher sampler's map x_T -> x_0 in K calls.

A trained diffusion policy (the teacher) turns Gaussian noise x_T into an action chunk by running
its deterministic sampler (DDIM or DPM-Solver++, several UNet calls). That map is a function of
(x_T, condition) alone, so a student of the same architecture, initialised from the teacher's
weights, can regress it. The student is an ordinary diffusion run with `prediction_type: sample`,
`sampler: ddim`, `timestep_spacing: trailing` and K = `num_inference_steps` (1 or 2), so it
loads, evaluates and benchmarks like any other run.

Training follows the student's own sampler: with fresh noise and dataset observations every
batch, step k sees the x_t that the student's previous (detached) prediction led to, and every
step regresses the teacher's sample for that x_T:

    x_t0 = x_T;  pred_k = student(x_tk, t_k, cond);  x_t(k+1) = DDIM(x_tk, pred_k)
    loss = mean_k huber(pred_k - sampler_teacher(x_T, cond))

The distance is a pseudo-Huber norm of the whole chunk, sqrt(mean(d^2) + c^2) - c: near the
boundary between two modes a squared error is smallest at the average of the two chunks (a
crash into the obstacle between them), a norm is smallest at one of them (a geometric median),
so the student commits to a route where it cannot tell which one the teacher would take.

Why this keeps modes where a few-step sampler of the teacher does not: which mode a chunk lands
in is decided by the noise, and the teacher's sampler resolves that decision over its steps; the
student is trained on the resolved samples. Near the boundary between two modes the first step
still blurs; a second step, trained on exactly those blurred inputs, pulls them to a mode.

This module is a layer on top of `train`: it builds the student's config and its loss and
passes them in (`train(cfg, out, make_loss=..., init_state=teacher weights)`).

    diffpolicy distill runs/reach --out runs/reach_2step       # then: diffpolicy eval ...
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import Tensor, nn

from diffpolicy.config import (
    Config,
    Sampling,
    apply_override,
    config_from_dict,
    config_to_dict,
    with_dataset,
)
from diffpolicy.errors import UserError
from diffpolicy.policies.condition import global_condition
from diffpolicy.schedulers import ddim_step

STUDENT_POLICY = {
    "prediction_type": "sample",
    "sampler": "ddim",
    "num_inference_steps": 2,
    "timestep_spacing": "trailing",
}
"""What makes a run a student: DDIM in x0 prediction from t = T - 1 (`num_inference_steps` may
be overridden: 1 is one UNet call per chunk)."""

STUDENT_TRAIN = {"steps": 1000, "lr": 3.0e-4, "warmup_steps": 50}
"""Distillation schedule defaults (the student starts from the teacher's weights)."""

STUDENT_LOWPASS = 6
"""A student's default `policy.lowpass` (capped at its horizon), with `control.rtc: true`: the
few-step path is the fast one users run, so it runs smooth by default (README "Smooth and
real-time execution"). Overridable. Chosen on ReachAround's validation seed 1000
(benchmarks/results/lowpass_student*_1000*.json): at sampling only, path roughness 1.29x ->
0.95x the demos', TV 0.035 -> 0.005; smoothing the distillation's training trajectory as well
gave 0.96x but TV 0.110, so training keeps the plain sampler step."""


def distill(
    teacher_run: str | Path,
    out_dir: str | Path,
    overrides=(),
    dataset: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Distill the diffusion run `teacher_run` into a new student run `out_dir` (on the
    teacher's dataset unless `dataset` names another file)."""
    from diffpolicy.checkpoint import load_run_config

    tcfg = load_run_config(teacher_run)
    cfg = student_config(teacher_run, tcfg, overrides)
    if dataset:
        cfg = with_dataset(cfg, dataset)
    return train_student(cfg, out_dir, progress=progress, teacher_cfg=tcfg)


def train_student(
    cfg: Config,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    teacher_cfg: Config | None = None,
) -> Path:
    """Train (or resume) the student described by `cfg` against its teacher run
    `cfg.policy.teacher`, whose config is `teacher_cfg` when the caller has read it."""
    from diffpolicy.checkpoint import load_policy, load_run_config
    from diffpolicy.train import pick_device, train

    tcfg = teacher_cfg or load_run_config(cfg.policy.teacher)
    check_teacher(cfg.policy.teacher, tcfg)
    check_student(cfg, tcfg)
    teacher, _ = load_policy(cfg.policy.teacher, "ema", pick_device(cfg.train.device), cfg=tcfg)
    teacher.requires_grad_(False)
    return train(
        cfg,
        out_dir,
        resume=resume,
        progress=progress,
        make_loss=lambda student: DistillLoss(student, teacher),
        init_state=teacher.state_dict(),
    )


def check_teacher(run_dir: str | Path, tcfg: Config) -> None:
    """Only an unconditioned diffusion run with a deterministic sampler can be distilled."""
    if tcfg.policy.type != "diffusion":
        raise UserError(
            f"{run_dir}: only a diffusion policy can be distilled, not {tcfg.policy.type}"
        )
    if tcfg.policy.sampler == "ddpm":
        raise UserError(
            f"{run_dir}: the teacher's sampler must be deterministic (ddim, dpmpp, euler, heun)"
        )
    if tcfg.policy.condition != "none":
        raise UserError(
            f"{run_dir}: distilling a conditioned policy "
            f"(policy.condition={tcfg.policy.condition}) is not supported"
        )


def student_config(teacher_run: str | Path, tcfg: Config, overrides=()) -> Config:
    """The teacher's config turned into a student's, then `overrides` applied."""
    data = config_to_dict(tcfg)
    base = [f"policy.{k}={v}" for k, v in STUDENT_POLICY.items()]
    base += [f"train.{k}={v}" for k, v in STUDENT_TRAIN.items()]
    base.append(f"policy.lowpass={min(STUDENT_LOWPASS, tcfg.data.horizon)}")
    if tcfg.control.temporal_ensemble == 0:  # ensembling re-plans every step: no chunks
        base.append("control.rtc=true")
    base.append(f"policy.teacher={Path(teacher_run).resolve()}")
    for assignment in base + list(overrides):
        apply_override(data, assignment)
    if data["policy"]["type"] != "diffusion":  # refused by check_student, with a clearer line
        data["policy"]["lowpass"], data["control"]["rtc"] = 0, False
    return config_from_dict(data)


def check_student(cfg: Config, tcfg: Config) -> None:
    """The student must see the teacher's windows (any dataset file) and have its architecture."""
    same_data = dataclasses.replace(cfg.data, dataset=tcfg.data.dataset) == tcfg.data
    for section, same in (("data", same_data), ("model", cfg.model == tcfg.model)):
        if not same:
            raise UserError(
                f"policy.teacher: the student's {section} config differs from the teacher's "
                f"({cfg.policy.teacher}/config.yaml); distill with the teacher's {section}"
            )
    if cfg.policy.type != tcfg.policy.type:
        raise UserError(
            f"policy.teacher is set: a student is a {tcfg.policy.type} policy like its teacher, "
            f"not {cfg.policy.type}"
        )
    for key, value in STUDENT_POLICY.items():
        if key != "num_inference_steps" and getattr(cfg.policy, key) != value:
            raise UserError(f"policy.teacher is set: a student needs policy.{key}={value}")


HUBER_C = 0.01
"""pseudo-Huber c in normalized action units: quadratic below ~1% of the action range."""


def pseudo_huber(d: Tensor) -> Tensor:
    """(B, Tp, A) differences -> (B,) sqrt(mean over the chunk of d^2 + c^2) - c."""
    return torch.sqrt(d.pow(2).mean(dim=(1, 2)) + HUBER_C**2) - HUBER_C


class DistillLoss(nn.Module):
    """forward(batch) = mean over the student's K steps of the pseudo-Huber distance between its
    x0 prediction and the teacher's sampled chunk for the same noise x_T (B, Tp, A), in
    normalized action units.

    The teacher is held outside the module's parameters and state (it is not saved with the
    student and DistributedDataParallel does not see it).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module):
        super().__init__()
        self.policy = student
        self._teacher = (teacher,)

    @torch.no_grad()
    def target(self, batch: dict[str, Tensor], x_T: Tensor) -> Tensor:
        """The teacher's normalized sample (B, Tp, A) from noise x_T, clipped like its chunks."""
        teacher = self._teacher[0]
        x0 = teacher.sample(batch, x_T, Sampling.of(teacher.cfg.policy))
        return x0.clamp(-1.0, 1.0) if teacher.cfg.policy.clip_sample else x0

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        student = self.policy
        p = student.cfg.policy
        B = batch["obs"].shape[0]
        x_t = torch.randn((B, student.horizon, student.action_dim), device=batch["obs"].device)
        x0 = self.target(batch, x_t)
        cond = global_condition(student, batch)  # (B, Gc)
        plan = student.schedule.plan(p.sampler, p.num_inference_steps, x_t.device)
        loss = x_t.new_zeros(())
        for k, coef in enumerate(plan.coef):
            pred = student.model(x_t, plan.timesteps[k].expand(B), cond)  # (B, Tp, A): x0
            loss = loss + pseudo_huber(pred - x0).mean()
            # the student's own sampler step from its (detached) prediction, without the
            # lowpass: smoothing the training trajectory too skewed the modes (STUDENT_LOWPASS)
            x_t, _ = ddim_step(x_t, pred.detach(), coef, "sample", p.clip_sample)
        return loss / len(plan.coef)
