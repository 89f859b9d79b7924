"""What every policy shares: the normalizer, the camera encoder, the extra condition (mode /
language) and the global condition vector fed to the backbone.

    global_cond = concat(flatten_time_major(concat(normalize(obs) (B, To, Do),
                                                   image_features (B, To, C*F))),  # with cameras
                         normalize(goal) (B, G),            # when dims["goal_dim"] > 0
                         cond_emb (B, cond_embed_dim))      # when policy.condition != "none"

A policy module has `.normalizer`, `.image_encoder` (None without `data.image_keys`) and
`.cond_encoder`; `global_condition(policy, batch)` reads all three.

Adding a condition type = one `elif` in `ConditionEncoder.__init__` and one in
`ConditionEncoder.forward`.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from diffpolicy.config import Config
from diffpolicy.models.unet1d import ConditionalUnet1D
from diffpolicy.models.vision import ImageEncoder
from diffpolicy.normalizer import Normalizer


def make_unet(cfg: Config, output_dim: int | None = None) -> ConditionalUnet1D:
    """The backbone all policies share: (B, Tp, A) -> (B, Tp, output_dim or A)."""
    m = cfg.model
    return ConditionalUnet1D(
        input_dim=cfg.dims["action_dim"],
        global_cond_dim=cfg.global_cond_dim,
        down_dims=m.down_dims,
        kernel_size=m.kernel_size,
        n_groups=m.n_groups,
        step_embed_dim=m.step_embed_dim,
        output_dim=output_dim,
    )


def make_image_encoder(cfg: Config) -> ImageEncoder | None:
    """One encoder per camera key of `data.image_keys` (see models/vision.py), or None."""
    if not cfg.data.image_keys:
        return None
    m = cfg.model
    return ImageEncoder(
        cfg.data.image_keys,
        (cfg.dims["image_height"], cfg.dims["image_width"]),
        cfg.crop_hw,
        backbone=m.vision_backbone,
        features=m.vision_features,
        keypoints=m.vision_keypoints,
    )


def make_normalizer(cfg: Config) -> Normalizer:
    """Normalizer over obs (Do), action (A) and goal (G, only if G > 0)."""
    dims = {"obs": cfg.dims["obs_dim"], "action": cfg.dims["action_dim"]}
    if cfg.dims.get("goal_dim", 0) > 0:
        dims["goal"] = cfg.dims["goal_dim"]
    return Normalizer(dims)


class ConditionEncoder(nn.Module):
    """Extra condition -> (B, cond_embed_dim), with a learned "null" for classifier-free guidance.

    - "mode": `nn.Embedding(num_modes + 1, D)` of batch["mode"] (B,); row num_modes is null
      (also used for mode < 0).
    - "language" with `policy.language_grounding: classifier` (the default): the same mode
      embedding, plus `.grounder` (grounding.py), the classifier that turns an instruction into
      the mode fed here (batch["mode"]); training fits it once, before the EMA copy, and freezes
      it. The policy itself never reads text.
    - "language" with grounding "none": sentence embedding batch["lang"] (B, E) -> standardize
      -> MLP -> (B, D); null is a learned vector. Sentence embeddings of different instructions
      are nearly parallel (cosine 0.98 for "... on the left" vs "... on the right"), so each
      dimension is standardized with the dataset's mean and std (buffers `lang_mean`,
      `lang_var`, set by `fit_language` from the unique instructions, or a running average
      over training batches until then). A row of NaN (no instruction) gets the null vector.
    - "none": no parameters, `forward` returns None.
    """

    def __init__(self, cfg: Config):
        super().__init__()
        self.kind = cfg.policy.condition
        D = cfg.model.cond_embed_dim
        self.reads_mode = cfg.policy.reads_mode
        grounded = self.kind == "language" and self.reads_mode
        if self.reads_mode:
            self.num_modes = cfg.dims["num_modes"]
            self.embed = nn.Embedding(self.num_modes + 1, D)
        if grounded:
            from diffpolicy.grounding import Grounder

            factors = cfg.dims.get("mode_factors") or [self.num_modes]
            self.grounder = Grounder(
                self.num_modes,
                dim=cfg.dims["lang_dim"],
                factors=factors,
                members=cfg.policy.grounding_members,
            )
        elif self.kind == "language":
            E = cfg.dims["lang_dim"]
            self.register_buffer("lang_mean", torch.zeros(E))
            self.register_buffer("lang_var", torch.ones(E))
            self.register_buffer("lang_count", torch.zeros((), dtype=torch.long))
            self.proj = nn.Sequential(nn.Linear(E, 256), nn.Mish(), nn.Linear(256, D))
            self.null = nn.Parameter(torch.randn(D) * 0.02)
            self.language_fitted = False
        elif self.kind not in ("none", "mode"):
            raise ValueError(f"policy.condition={self.kind!r} must be none, mode or language")

    @torch.no_grad()
    def fit_language(self, emb: Tensor) -> None:
        """Set the language standardization from all instruction embeddings (N, E)."""
        emb = torch.as_tensor(emb, dtype=torch.float32).to(self.lang_mean.device)
        self.lang_mean.copy_(emb.mean(0))
        self.lang_var.copy_(emb.var(0, unbiased=False))
        self.lang_count.fill_(len(emb))
        self.language_fitted = True

    @torch.no_grad()
    def _update_language_stats(self, emb: Tensor) -> None:
        """Cumulative mean / variance over every embedding seen in training (Chan et al.)."""
        n, m = self.lang_count.item(), emb.shape[0]
        mean_b, var_b = emb.mean(0), emb.var(0, unbiased=False)
        total = n + m
        delta = mean_b - self.lang_mean
        self.lang_var.copy_((n * self.lang_var + m * var_b + delta**2 * n * m / total) / total)
        self.lang_mean.add_(delta * m / total)
        self.lang_count.fill_(total)

    def forward(
        self, batch: dict[str, Tensor], B: int, drop: Tensor | None = None
    ) -> Tensor | None:
        """(B, cond_embed_dim) condition embedding; rows where `drop` (B,) bool is True are null.

        A batch without the condition key gets the null embedding for every row.
        """
        if self.kind == "none":
            return None
        if self.reads_mode:
            mode = (
                batch["mode"].long()
                if "mode" in batch
                else torch.full((B,), -1, dtype=torch.long, device=self.embed.weight.device)
            )
            idx = torch.where(mode < 0, torch.full_like(mode, self.num_modes), mode)
            if drop is not None:
                idx = torch.where(drop, torch.full_like(idx, self.num_modes), idx)
            return self.embed(idx)
        null = self.null.expand(B, -1)
        if "lang" not in batch:
            return null
        emb = batch["lang"].float()
        missing = torch.isnan(emb).any(-1)  # (B,) rows without an instruction -> null
        emb = torch.nan_to_num(emb)
        if self.training and torch.is_grad_enabled() and not self.language_fitted:
            self._update_language_stats(emb)
        z = (emb - self.lang_mean) / torch.sqrt(self.lang_var + 1e-6)
        out = self.proj(z)
        drop = missing if drop is None else drop | missing
        return torch.where(drop[:, None], null, out)


def observation_features(policy: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """(B, To*(Do + C*F) + G): what the policy sees of the world, before the extra condition.

    batch["obs"] (B, To, Do) and batch["goal"] (B, G) in env units, and per camera key
    batch[key] (B, To, H, W, 3) uint8 when the policy has an image encoder.
    """
    obs = policy.normalizer.normalize("obs", batch["obs"].float())  # (B, To, Do)
    if policy.image_encoder is not None:
        images = {k: batch[k] for k in policy.image_encoder.cameras}
        obs = torch.cat([obs, policy.image_encoder(images)], dim=-1)  # (B, To, Do + C*F)
    parts = [rearrange(obs, "b t d -> b (t d)")]  # time-major flatten
    if "goal" in policy.normalizer.names:
        parts.append(policy.normalizer.normalize("goal", batch["goal"].float()))
    return torch.cat(parts, dim=-1)


def global_condition(
    policy: nn.Module,
    batch: dict[str, Tensor],
    drop: Tensor | None = None,
    features: Tensor | None = None,
) -> Tensor:
    """(B, To*(Do + C*F) + G + cond_embed_dim) global condition from a batch in env units.

    `features`: `observation_features(policy, batch)` when the caller has it already (guided
    sampling builds the conditional and the unconditional vector from one image encoding).
    The extra condition comes from batch["mode"] (B,) (mode runs, and language runs grounded by
    the classifier) or batch["lang"] (B, E) (grounding "none"); `drop` (B,) bool
    nulls it for those rows.
    """
    if features is None:
        features = observation_features(policy, batch)
    emb = policy.cond_encoder(batch, features.shape[0], drop)
    return features if emb is None else torch.cat([features, emb], dim=-1)


def condition_dropout(cfg: Config, B: int, device: torch.device) -> Tensor | None:
    """(B,) bool mask of rows whose extra condition is replaced by null in training."""
    if cfg.policy.condition == "none" or cfg.policy.cond_dropout <= 0:
        return None
    return torch.rand(B, device=device) < cfg.policy.cond_dropout


def masked_mean(sq_err: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of sq_err (B, Tp, A) over positions where mask (B, Tp) is True."""
    if mask is None:
        return sq_err.mean()
    m = mask.to(sq_err.dtype).unsqueeze(-1).expand_as(sq_err)
    return (sq_err * m).sum() / m.sum().clamp_min(1.0)
