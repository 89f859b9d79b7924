"""Typed configuration. YAML files in `configs/` only fill these dataclasses.

Every field has a docstring-style comment. `load_config` rejects unknown keys (naming the closest
valid key), wrong types and out-of-range values with one readable message (`ConfigError`).
Derived values are properties, never stored; `dims` holds what the dataset measured.

A YAML file may start from another one with `base: other.yaml` (a path relative to the file) and
state only what differs; mappings merge key by key, anything else replaces the base's value.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from diffpolicy.errors import ConfigError


@dataclass
class DataConfig:
    dataset: str = ""
    """Path to the demonstration HDF5 (robomimic layout). `--dataset` overrides it."""
    obs_keys: tuple[str, ...] = ("observation",)
    """Keys under `obs/` concatenated (in this order) into the policy's observation vector."""
    goal_key: str | None = "desired_goal"
    """Key under `obs/` whose current value joins the global condition; null for none."""
    image_keys: tuple[str, ...] = ()
    """Camera keys under `obs/` (uint8 (H, W, 3) frames, e.g. `top_image`), each seen through
    its own encoder (`model.vision_*`); all of one size."""
    n_obs_steps: int = 2
    """To: observations the policy sees."""
    horizon: int = 16
    """Tp: actions the policy predicts per chunk."""
    val_fraction: float = 0.1
    """Share of episodes held out for validation (split by episode, seeded)."""
    split_seed: int = 0
    """Seed of the train/validation split."""
    max_episodes: int = 0
    """Use only the first N episodes (0 = all)."""


@dataclass
class ModelConfig:
    down_dims: tuple[int, ...] = (64, 128, 256)
    """Channels per UNet level; the horizon is halved len(down_dims) - 1 times."""
    kernel_size: int = 5
    """Conv1d kernel size of the residual blocks."""
    n_groups: int = 8
    """GroupNorm groups; must divide every entry of down_dims."""
    step_embed_dim: int = 128
    """Size of the sinusoidal diffusion-step embedding."""
    cond_embed_dim: int = 64
    """Size of a learned mode embedding or projected language embedding."""
    vision_backbone: str = "small"
    """small (a 4-layer CNN that trains in minutes on a CPU) | resnet18 (the reference trunk,
    GroupNorm for BatchNorm): the per-camera trunk before the spatial softmax."""
    vision_features: int = 64
    """Features per camera and time step (after the spatial-softmax keypoints)."""
    vision_keypoints: int = 32
    """Spatial-softmax keypoints per camera."""
    crop_ratio: float = 0.9
    """Side of the crop / side of the image: random crop in training, centre crop at
    evaluation (1.0 = no crop)."""


@dataclass
class PolicyConfig:
    type: str = "diffusion"
    """diffusion | mse | gmm."""
    num_train_timesteps: int = 100
    """Diffusion steps used in training (DDPM)."""
    beta_schedule: str = "squaredcos_cap_v2"
    """squaredcos_cap_v2 | linear."""
    prediction_type: str = "epsilon"
    """epsilon | sample: what the diffusion UNet predicts; velocity: flow matching (rectified
    flow: x_t = (1 - t) x_0 + t eps, the UNet predicts eps - x_0; samplers euler | heun)."""
    clip_sample: bool = True
    """Clip the predicted clean sample to [-1, 1] while sampling."""
    sampler: str = "ddim"
    """ddpm | ddim | dpmpp (epsilon / sample prediction), euler | heun (velocity): the reverse
    process used at inference (`eval --sampler`)."""
    num_inference_steps: int = 10
    """Reverse steps at inference (`eval --steps`)."""
    lowpass: int = 0
    """Keep only the chunk's `lowpass` lowest temporal frequencies (an orthonormal DCT-II basis
    over the horizon) in every reverse step's x0 estimate; 0 keeps all (`eval --lowpass`).
    Training-free: the residual noise of few-step samplers is what makes their paths zig-zag."""
    timestep_spacing: str = "leading"
    """leading | trailing: ddpm/ddim timesteps (trailing starts at pure noise; better few-step)."""
    gmm_components: int = 5
    """Mixture components of the gmm head."""
    gmm_min_std: float = 1e-4
    """Lower bound on a component's standard deviation (normalized units)."""
    condition: str = "none"
    """none | mode | language: an extra condition on top of observations and goal."""
    cond_dropout: float = 0.0
    """Probability of dropping the condition in training (classifier-free guidance)."""
    guidance: float = 1.0
    """Guidance scale at sampling: 0 unconditional, 1 conditional, > 1 guided (`--guidance`)."""
    language_model: str = ""
    """Local sentence-transformers model path; empty = the packaged all-MiniLM-L6-v2."""
    language_grounding: str = "classifier"
    """classifier | none. classifier: a calibrated classifier (grounding.py), trained on the
    dataset's paraphrases, maps the instruction to a mode and the policy is conditioned on that
    mode; it refuses instructions it cannot ground. none: the policy reads the sentence embedding
    itself (for datasets whose episodes have instructions but no mode labels)."""
    grounding_threshold: float = 0.7
    """Refuse an instruction whose best mode's probability is below this (classifier grounding;
    chosen on the validation phrasings, envs/phrasings/*_val.tsv)."""
    grounding_steps: int = 1200
    """Optimizer steps per member of the grounding classifier (batch 128; about two minutes on
    2 CPU cores). Chosen on ReachAround's validation phrasings, with the misspelled copies
    (train.fit_grounding): at threshold 0.6, 0.940 grounded right at 600 steps, 0.955 at 1200,
    0.953 at 2400."""
    grounding_misspelled: float = 0.5
    """Share of the phrasings and off-task sentences that also get a misspelled copy when the
    grounding classifier is fit (envs.instructions.misspell: "rigth", "pillra"). Chosen on the
    validation phrasings: on ReachAround at threshold 0.6 and 600 steps, 0.940 grounded right
    with copies, 0.933 without (0.955 with copies at 1200); Pick sets 0 (pick_lang.yaml)."""
    grounding_members: int = 3
    """Classifiers averaged by the grounding (each with its own split, initialization and batch
    order): one that reads an unusual phrasing its own way is outvoted or lowers the confidence.
    Chosen on the validation phrasings (ReachAround: 3 members 0.975 grounded right, 0.013
    wrong; one member 0.950, 0.037 wrong)."""
    teacher: str = ""
    """Run directory of the diffusion policy this few-step student was distilled from
    (set by `diffpolicy distill`; see distill.py)."""

    @property
    def reads_mode(self) -> bool:
        """The network is conditioned on a mode id (batch["mode"]): mode runs, and language runs
        whose instruction the grounding classifier turns into a mode."""
        grounded = self.condition == "language" and self.language_grounding == "classifier"
        return self.condition == "mode" or grounded


@dataclass
class TrainConfig:
    steps: int = 3000
    """Optimizer steps."""
    batch_size: int = 256
    """Global batch size (split across DDP ranks)."""
    lr: float = 1e-4
    """Peak AdamW learning rate."""
    betas: tuple[float, float] = (0.95, 0.999)
    """AdamW betas."""
    weight_decay: float = 1e-6
    """AdamW weight decay."""
    warmup_steps: int = 500
    """Linear warmup before the cosine decay."""
    grad_clip: float = 1.0
    """Max global gradient norm (0 disables clipping)."""
    ema_power: float = 0.75
    """EMA warmup power: decay = 1 - (1 + step)^-power, capped by ema_max_decay."""
    ema_max_decay: float = 0.9999
    """Upper bound of the EMA decay."""
    val_every: int = 500
    """Validation loss every N steps (and at the end)."""
    checkpoint_every: int = 1000
    """Checkpoint every N steps (and at the end)."""
    log_every: int = 50
    """metrics.jsonl / wandb logging every N steps."""
    seed: int = 0
    """Seed of weights, batches and noise."""
    device: str = "auto"
    """auto | cpu | cuda."""
    precision: str = "fp32"
    """CUDA only: fp32 (TF32 matmuls and convs) | bf16 (autocast). On an H100 these launch-bound
    models train faster in fp32 (benchmarks/results/gpu.json)."""
    threads: int = 0
    """torch threads on CPU (0 = all cores)."""
    wandb: str = "disabled"
    """disabled | offline | online."""
    wandb_project: str = "diffpolicy"
    """wandb project name."""


@dataclass
class EvalConfig:
    episodes: int = 50
    """Rollouts per evaluation."""
    envs: int = 8
    """Environments stepped together (one batched policy call per re-plan)."""
    max_steps: int = 0
    """Episode step limit (0 = the env's default)."""
    seed: int = 1000
    """Seed of the first evaluation episode."""
    constant_images: bool = False
    """Ablation: the policy sees every camera frame replaced by one grey image (does the
    image carry the information? `eval --constant-images`)."""


@dataclass
class ControlConfig:
    n_action_steps: int = 8
    """Ta: actions executed before re-planning (the slice pred[:, To-1 : To-1+Ta];
    `eval --action-steps`)."""
    temporal_ensemble: float = 0.0
    """0 = receding horizon; > 0 = exponential weight of older chunks when ensembling."""
    delay: int = 0
    """D: simulated inference delay in control steps: the env executes D committed actions of
    the previous chunk while the next one is computed (`eval --delay`; 0 <= D <= Ta)."""
    rtc: bool = False
    """Real-time chunking: inpaint each new chunk to the committed actions and guide it towards
    the previous chunk over their overlap (diffusion policies; `eval --rtc`)."""


@dataclass
class Config:
    env_id: str = "diffpolicy/ReachAround-v0"
    """Gymnasium id of the task the policy acts in."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the env (e.g. `cameras`, `image_size`). Empty in a YAML file: filled
    from the dataset's `env_args.env_kwargs` when training starts, so evaluation rebuilds the
    env the demos came from."""
    dims: dict[str, Any] = field(default_factory=dict)
    """Measured from the dataset when training starts (`train` returns a copy of the config
    with them; a YAML file leaves them empty): obs_dim, action_dim, goal_dim, num_modes,
    lang_dim (sentence encoder width), mode_factors (language runs: sizes of the choices a
    mode composes, grounding.mode_factors), image_height, image_width
    (with image keys). Stored in the run directory so a policy can be rebuilt without the data."""

    @property
    def global_cond_dim(self) -> int:
        """Size of the global condition: To flattened observations (and, per camera, image
        features) + goal (+ extra condition)."""
        per_step = self.dims["obs_dim"] + len(self.data.image_keys) * self.model.vision_features
        d = self.data.n_obs_steps * per_step + self.dims.get("goal_dim", 0)
        if self.policy.condition != "none":
            d += self.model.cond_embed_dim
        return d

    @property
    def crop_hw(self) -> tuple[int, int]:
        """(h, w) of the image crop the encoders see (needs dims image_height/width)."""
        r = self.model.crop_ratio
        return (
            max(1, int(round(self.dims["image_height"] * r))),
            max(1, int(round(self.dims["image_width"] * r))),
        )


@dataclass(frozen=True)
class Sampling:
    """How a diffusion policy draws one chunk. `Sampling.of(cfg.policy)` gives a run's own
    setting; benchmarks and studies vary fields with `dataclasses.replace`. (mse and gmm
    policies take it and ignore it.)"""

    sampler: str = "ddim"
    """ddpm | ddim | dpmpp."""
    steps: int = 10
    """Reverse steps (UNet calls, twice that under guidance)."""
    guidance: float = 1.0
    """Classifier-free guidance scale: 0 unconditional, 1 conditional, > 1 guided."""
    lowpass: int = 0
    """Temporal frequencies of the chunk kept at every step (0: all; `PolicyConfig.lowpass`)."""
    compiled: bool = True
    """Use the compiled paths where they apply (`diffpolicy/fastpath.py`: a frozen trace on CPU,
    a CUDA graph on GPU); False samples eagerly, for comparisons. Same numbers either way."""

    @classmethod
    def of(cls, p: PolicyConfig) -> Sampling:
        return cls(p.sampler, p.num_inference_steps, p.guidance, p.lowpass)


SAMPLERS = ("ddpm", "ddim", "dpmpp", "euler", "heun")
"""The reverse processes of diffpolicy/schedulers.py."""
FLOW_SAMPLERS = ("euler", "heun")
"""The samplers of a flow-matching (velocity) policy; the others are for diffusion."""

CHOICES = {
    "model.vision_backbone": ("small", "resnet18"),
    "policy.type": ("diffusion", "mse", "gmm"),
    "policy.beta_schedule": ("squaredcos_cap_v2", "linear"),
    "policy.prediction_type": ("epsilon", "sample", "velocity"),
    "policy.sampler": SAMPLERS,
    "policy.timestep_spacing": ("leading", "trailing"),
    "policy.condition": ("none", "mode", "language"),
    "policy.language_grounding": ("none", "classifier"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.precision": ("fp32", "bf16"),
    "train.wandb": ("disabled", "offline", "online"),
}


LIMITS = {
    "data.n_obs_steps": 64,
    "data.horizon": 1024,
    "model.kernel_size": 31,
    "model.step_embed_dim": 4096,
    "model.cond_embed_dim": 4096,
    "model.vision_features": 4096,
    "model.vision_keypoints": 1024,
    "policy.num_train_timesteps": 10_000,
    "policy.gmm_components": 256,
    "train.steps": 100_000_000,
    "train.batch_size": 1_000_000,
    "train.warmup_steps": 100_000_000,
    "train.threads": 1024,
    "eval.episodes": 1_000_000,
    "eval.envs": 1024,
}
"""Largest accepted values: sizes past these cannot fit a training run on any one machine (or
are typos), and are refused at validation instead of after minutes of work."""
MAX_CHANNELS, MAX_LEVELS = 8192, 8
"""Largest entry of model.down_dims, and most entries."""


def validate(cfg: Config) -> Config:
    """Check value ranges and cross-field constraints; raise ConfigError naming the problem."""
    d, m, p, t = cfg.data, cfg.model, cfg.policy, cfg.train

    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(msg)

    for key, most in LIMITS.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        need(value <= most, f"{key}={value} is larger than the limit {most}")
    need(len(m.down_dims) <= MAX_LEVELS, f"model.down_dims has more than {MAX_LEVELS} levels")
    need(
        all(c <= MAX_CHANNELS for c in m.down_dims),
        f"model.down_dims={list(m.down_dims)}: entries must be <= {MAX_CHANNELS}",
    )

    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        need(value in allowed, f"{key}={value!r} must be one of {', '.join(allowed)}")
    ctl = cfg.control
    need(d.n_obs_steps >= 1, f"data.n_obs_steps={d.n_obs_steps} must be >= 1")
    need(ctl.n_action_steps >= 1, f"control.n_action_steps={ctl.n_action_steps} must be >= 1")
    need(len(d.obs_keys) >= 1, "data.obs_keys must name at least one observation key")
    need(
        len(set(d.image_keys)) == len(d.image_keys),
        f"data.image_keys={list(d.image_keys)} names a key twice",
    )
    both = sorted(set(d.image_keys) & set(d.obs_keys) | set(d.image_keys) & {d.goal_key})
    need(not both, f"data.image_keys {both} also named in data.obs_keys or data.goal_key")
    need(0.5 <= m.crop_ratio <= 1.0, f"model.crop_ratio={m.crop_ratio} must be in [0.5, 1]")
    need(m.vision_features >= 1, f"model.vision_features={m.vision_features} must be >= 1")
    need(m.vision_keypoints >= 1, f"model.vision_keypoints={m.vision_keypoints} must be >= 1")
    factor = 2 ** (len(m.down_dims) - 1)
    need(
        d.horizon >= factor and d.horizon % factor == 0,
        f"data.horizon={d.horizon} must be a positive multiple of {factor} "
        f"(the UNet halves it {len(m.down_dims) - 1} times)",
    )
    need(
        ctl.n_action_steps <= d.horizon - d.n_obs_steps + 1,
        f"control.n_action_steps={ctl.n_action_steps} must be <= data.horizon - data.n_obs_steps"
        f" + 1 = {d.horizon - d.n_obs_steps + 1}",
    )
    need(0.0 <= d.val_fraction < 1.0, f"data.val_fraction={d.val_fraction} must be in [0, 1)")
    need(d.max_episodes >= 0, f"data.max_episodes={d.max_episodes} must be >= 0")
    need(len(m.down_dims) >= 1, "model.down_dims must have at least one level")
    need(m.n_groups >= 1, f"model.n_groups={m.n_groups} must be >= 1")
    for c in m.down_dims:
        need(
            c > 0 and c % m.n_groups == 0,
            f"model.down_dims entry {c} must be a positive multiple of model.n_groups={m.n_groups}",
        )
    need(
        m.kernel_size >= 1 and m.kernel_size % 2 == 1,
        f"model.kernel_size={m.kernel_size} must be a positive odd number",
    )
    need(
        m.step_embed_dim >= 2 and m.step_embed_dim % 2 == 0,
        f"model.step_embed_dim={m.step_embed_dim} must be a positive even number",
    )
    need(m.cond_embed_dim >= 1, f"model.cond_embed_dim={m.cond_embed_dim} must be >= 1")
    need(
        p.num_train_timesteps >= 2,
        f"policy.num_train_timesteps={p.num_train_timesteps} must be >= 2",
    )
    need(
        1 <= p.num_inference_steps <= p.num_train_timesteps,
        f"policy.num_inference_steps={p.num_inference_steps} must be in "
        f"[1, num_train_timesteps={p.num_train_timesteps}]",
    )
    flow = p.prediction_type == "velocity"
    need(
        flow == (p.sampler in FLOW_SAMPLERS),
        f"policy.sampler={p.sampler} cannot sample policy.prediction_type={p.prediction_type}: "
        + (
            f"flow matching samples with {' or '.join(FLOW_SAMPLERS)}"
            if flow
            else f"{' and '.join(FLOW_SAMPLERS)} are for prediction_type=velocity (flow matching)"
        ),
    )
    need(
        0 <= p.lowpass <= d.horizon,
        f"policy.lowpass={p.lowpass} must be in [0, data.horizon={d.horizon}] (0: off)",
    )
    need(
        p.lowpass == 0 or p.type == "diffusion",
        f"policy.lowpass={p.lowpass} needs a diffusion policy (it acts in the sampler)",
    )
    need(p.gmm_components >= 1, f"policy.gmm_components={p.gmm_components} must be >= 1")
    need(p.gmm_min_std > 0, f"policy.gmm_min_std={p.gmm_min_std} must be > 0")
    need(0.0 <= p.cond_dropout < 1.0, f"policy.cond_dropout={p.cond_dropout} must be in [0, 1)")
    need(
        0.0 < p.grounding_threshold < 1.0,
        f"policy.grounding_threshold={p.grounding_threshold} must be in (0, 1)",
    )
    need(p.grounding_steps >= 1, f"policy.grounding_steps={p.grounding_steps} must be >= 1")
    need(
        0.0 <= p.grounding_misspelled <= 1.0,
        f"policy.grounding_misspelled={p.grounding_misspelled} must be in [0, 1]",
    )
    need(
        1 <= p.grounding_members <= 16,
        f"policy.grounding_members={p.grounding_members} must be in [1, 16]",
    )
    need(p.guidance >= 0.0, f"policy.guidance={p.guidance} must be >= 0")
    need(t.steps >= 1, f"train.steps={t.steps} must be >= 1")
    need(t.batch_size >= 1, f"train.batch_size={t.batch_size} must be >= 1")
    need(t.lr > 0 and math.isfinite(t.lr), f"train.lr={t.lr} must be a positive number")
    need(all(0 <= b < 1 for b in t.betas), f"train.betas={t.betas} must lie in [0, 1)")
    need(t.weight_decay >= 0, f"train.weight_decay={t.weight_decay} must be >= 0")
    need(t.warmup_steps >= 0, f"train.warmup_steps={t.warmup_steps} must be >= 0")
    need(t.grad_clip >= 0, f"train.grad_clip={t.grad_clip} must be >= 0")
    need(0 < t.ema_max_decay < 1, f"train.ema_max_decay={t.ema_max_decay} must be in (0, 1)")
    need(t.ema_power > 0, f"train.ema_power={t.ema_power} must be > 0")
    for name in ("val_every", "checkpoint_every", "log_every"):
        v = getattr(t, name)
        need(v >= 1, f"train.{name}={v} must be >= 1")
    need(t.threads >= 0, f"train.threads={t.threads} must be >= 0")
    need(cfg.eval.episodes >= 1, f"eval.episodes={cfg.eval.episodes} must be >= 1")
    need(cfg.eval.envs >= 1, f"eval.envs={cfg.eval.envs} must be >= 1")
    need(cfg.eval.max_steps >= 0, f"eval.max_steps={cfg.eval.max_steps} must be >= 0")
    need(
        ctl.temporal_ensemble >= 0,
        f"control.temporal_ensemble={ctl.temporal_ensemble} must be >= 0",
    )
    need(
        0 <= ctl.delay <= ctl.n_action_steps,
        f"control.delay={ctl.delay} must be in [0, control.n_action_steps={ctl.n_action_steps}]",
    )
    need(
        ctl.delay + ctl.n_action_steps <= d.horizon - d.n_obs_steps + 1,
        f"control.delay + control.n_action_steps = {ctl.delay + ctl.n_action_steps} must be <= "
        f"data.horizon - data.n_obs_steps + 1 = {d.horizon - d.n_obs_steps + 1}",
    )
    need(
        not (ctl.temporal_ensemble > 0 and (ctl.delay or ctl.rtc)),
        "control.temporal_ensemble re-plans every step: it takes no control.delay or control.rtc",
    )
    need(
        not ctl.rtc or p.type == "diffusion",
        f"control.rtc=true needs a diffusion policy (real-time chunking inpaints the sampler); "
        f"this one is {p.type}",
    )
    return cfg


# ----------------------------------------------------------------------------- YAML <-> dataclass


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check `value` against a type hint and convert lists to tuples; raise ConfigError."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}={value!r} must be a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}={value!r} must have {len(args)} entries")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}={value!r} must be a mapping")
        if typing.get_args(hint)[1] is Any:  # env_kwargs: plain YAML / JSON values
            _check_plain(value, where)
            return {str(k): v for k, v in value.items()}
        for k, v in value.items():
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"{where}.{k}={v!r} must be an integer")
        return {str(k): v for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}={value!r} must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}={value!r} must be an integer")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}={value!r} must be a number")
        if not math.isfinite(value):
            raise ConfigError(f"{where}={value!r} must be finite")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}={value!r} must be a string")
        return value
    return value


def _check_plain(value: Any, where: str) -> None:
    """Refuse anything but str / number / bool / None / lists and mappings of them."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_plain(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif value is not None and not isinstance(value, (str, int, float, bool)):
        raise ConfigError(f"{where}={value!r} must be a plain YAML value")


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(
            f"{prefix.rstrip('.') or 'config'} must be a mapping, got {type(data).__name__}"
        )
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}{key}"
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            shown = where if where.isprintable() else repr(where)[1:-1]  # keep it one line
            raise ConfigError(f"unknown config key '{shown}'{hint}")
        hint_t = hints[key]
        if dataclasses.is_dataclass(hint_t):
            kwargs[key] = _build(hint_t, value, f"{where}.")
        else:
            kwargs[key] = _coerce(value, hint_t, where)
    return cls(**kwargs)


MOVED = {
    ("data", "n_action_steps"): ("control", "n_action_steps"),
    ("eval", "temporal_ensemble"): ("control", "temporal_ensemble"),
}
"""Keys that moved to another section: a run directory written before the move still loads."""


def _move_legacy_keys(data: dict) -> dict:
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for (old_s, old_k), (new_s, new_k) in MOVED.items():
        section = data.get(old_s)
        if isinstance(section, dict) and old_k in section:
            value = section.pop(old_k)
            target = data.setdefault(new_s, {})
            if isinstance(target, dict):
                target[new_k] = value
    return data


def config_from_dict(data: dict) -> Config:
    """Build and validate a Config from a nested dict (as read from YAML)."""
    return validate(_build(Config, _move_legacy_keys(data or {}), ""))


def with_dataset(cfg: Config, path: str | Path) -> Config:
    """A copy of `cfg` training on the file `path` (stored as an absolute path)."""
    return dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, dataset=str(Path(path).resolve()))
    )


def replace_values(cfg: Config, values: dict[str, Any]) -> Config:
    """A validated copy of `cfg` with `{"section.key": value}` set (None values skipped)."""
    data = config_to_dict(cfg)
    for key, value in values.items():
        if value is not None:
            section, name = key.split(".")
            data[section][name] = value
    return config_from_dict(data)


def config_to_dict(cfg: Config) -> dict:
    """Nested plain dict (tuples as lists) ready for YAML or wandb."""

    def plain(x: Any) -> Any:
        if isinstance(x, tuple):
            return [plain(v) for v in x]
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        return x

    return plain(dataclasses.asdict(cfg))


def apply_override(data: dict, assignment: str) -> None:
    """Apply one `section.key=value` command-line override to a nested dict in place."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like section.key=value")
    path, raw = assignment.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    node = data
    parts = path.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {assignment!r}: '{part}' is not a section")
    node[parts[-1]] = value


def _merge(base: dict, top: dict) -> dict:
    """`top` over `base`: mappings merge key by key, other values replace."""
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a YAML mapping with the safe loader, following `base:`; ConfigError if missing,
    malformed or circular."""
    data = _read_one_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    here = Path(path).resolve()
    if not isinstance(base, str):
        raise ConfigError(f"config file {path}: base={base!r} must be a file name")
    base_path = (here.parent / base).resolve()
    if base_path in (*_seen, here):
        raise ConfigError(f"config file {path}: base {base} includes itself")
    return _merge(read_yaml(base_path, (*_seen, here)), data)


def _read_one_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must contain a mapping at the top level")
    return data


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config, apply `key=value` overrides, validate, and return a Config."""
    data = read_yaml(path)
    for assignment in overrides:
        apply_override(data, assignment)
    return config_from_dict(data)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically (a kill leaves the old file or the new)."""
    from diffpolicy.files import write_text

    write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
