"""Receding-horizon control of many environments with one batched policy call per re-plan.

For each env slot the controller keeps the last To observations. When a slot's action queue is
empty it asks the policy for a chunk (B, Tp, A) -- all slots that need one in the same call --
and queues `pred[:, To-1 : To-1+Ta]`. With temporal ensembling (ACT-style) it re-plans every
step and executes the weighted mean of every stored chunk's prediction for the current step,
weights exp(-m * age) with m = `control.temporal_ensemble`.

Inference delay (`control.delay` = D, as on a robot that keeps moving while the next chunk is
computed): a slot re-plans when D actions are left in its queue, from the observation of that
moment; the env executes those D committed actions, then the new chunk from index D on,
`pred[:, To-1+D : To-1+D+Ta]` (the first chunk of an episode is computed before it starts).
Naive execution ignores that the committed actions and the new chunk need not join up.
Real-time chunking (`control.rtc`, Black et al. 2025, here for the project's samplers): the new
chunk is inpainted at every reverse step (`DiffusionPolicy.prefix_guide`): the entries that
overlap actions already executed or committed are fixed to them (weight 1), the rest of the
overlap with the previous chunk is pulled towards it with weights decaying along the horizon,
and the entries past the previous chunk are free. Training-free; no extra UNet calls.
"""

from __future__ import annotations

import math
import time
from collections import deque

import numpy as np
import torch

from diffpolicy.config import Config, Sampling


class RecedingHorizonController:
    """Batched receding-horizon controller around a policy (see module docstring).

    Example:
        ctrl = RecedingHorizonController(policy, cfg, n_slots=8)
        ctrl.reset(slot)                       # at the start of each episode in that slot
        actions = ctrl.act({slot: obs_dict})   # -> {slot: (A,) float32}
    """

    def __init__(self, policy, cfg: Config, n_slots: int, seed: int = 0):
        """`cfg` is the run's config as evaluated: `cfg.control` shapes the execution and
        `cfg.policy` gives the sampling (`Sampling.of`)."""
        self.policy, self.cfg = policy, cfg
        self.To, self.Tp = cfg.data.n_obs_steps, cfg.data.horizon
        self.Ta, self.m = cfg.control.n_action_steps, cfg.control.temporal_ensemble
        self.D, self.rtc = cfg.control.delay, cfg.control.rtc
        self.rtc_weights = rtc_weights(self.Tp, self.To, self.Ta, self.D)  # (Tp,)
        self.sampling = Sampling.of(cfg.policy)
        self.device = next(iter(policy.buffers())).device
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.history: list[deque] = [deque(maxlen=self.To) for _ in range(n_slots)]
        self.queue: list[deque] = [deque() for _ in range(n_slots)]  # (chunk id, (A,) action)
        self.previous: list[np.ndarray | None] = [None] * n_slots  # last chunk (Tp, A)
        self.plans = [0] * n_slots  # chunks planned this episode
        self.executing = [-1] * n_slots  # chunk id of the action executed last
        self.boundary = [False] * n_slots  # the last action began a new chunk
        self.chunks: list[list] = [[] for _ in range(n_slots)]  # ensembling: (t0, chunk)
        self.t = [0] * n_slots
        self.condition: list[dict] = [{} for _ in range(n_slots)]
        self.latencies_ms: list[float] = []
        self.batch_sizes: list[int] = []

    def reset(self, slot: int, condition: dict | None = None) -> None:
        """Start a new episode in `slot`; `condition`: {"mode": int} (mode runs and grounded
        language runs) or {"lang": (E,) array} (language runs without grounding)."""
        self.history[slot].clear()
        self.queue[slot].clear()
        self.previous[slot], self.plans[slot], self.executing[slot] = None, 0, -1
        self.chunks[slot].clear()
        self.t[slot] = 0
        self.condition[slot] = condition or {}

    def first_chunks(self, obs: dict, condition: dict | None = None) -> np.ndarray:
        """One chunk per slot (n_slots, Tp, A), all from the same first observation of an
        episode (`obs`, padded backwards as `act` does): the choices the policy has there."""
        frame, goal = self._features(obs)
        slots = list(range(len(self.history)))
        for s in slots:
            self.reset(s, condition)
            self.history[s].extend([frame] * self.To)
        return self._plan(slots, {s: goal for s in slots})

    def _features(self, obs: dict) -> tuple[dict, np.ndarray | None]:
        """One history frame ({"obs": (Do,), camera key: (H, W, 3) uint8}) and the goal."""
        d = self.cfg.data
        x = np.concatenate([np.asarray(obs[k], np.float32).reshape(-1) for k in d.obs_keys])
        g = np.asarray(obs[d.goal_key], np.float32).reshape(-1) if d.goal_key else None
        return {"obs": x, **{k: np.asarray(obs[k], np.uint8) for k in d.image_keys}}, g

    def _plan(self, slots: list[int], goals: dict[int, np.ndarray]) -> np.ndarray:
        """One batched policy call for `slots` -> (len(slots), Tp, A) in env units.

        The batch is padded (repeating the first slot) to the next power of two, so a run sees
        at most log2(n_slots) + 1 batch shapes: compiled samplers (TorchScript traces, CUDA
        graphs) are built per shape, and per-op overhead, not batch size, dominates small UNets.
        """
        n = len(slots)
        slots = slots + [slots[0]] * ((1 << (n - 1).bit_length()) - n)
        batch = {  # obs (B, To, Do), camera keys (B, To, H, W, 3)
            k: torch.from_numpy(
                np.stack([np.stack([f[k] for f in self.history[s]]) for s in slots])
            )
            for k in ("obs", *self.cfg.data.image_keys)
        }
        if self.cfg.data.goal_key:
            batch["goal"] = torch.from_numpy(np.stack([goals[s] for s in slots]))
        if self.cfg.policy.reads_mode:
            batch["mode"] = torch.tensor([self.condition[s].get("mode", -1) for s in slots])
        elif self.cfg.policy.condition == "language":
            dim = self.cfg.dims["lang_dim"]
            rows = [self.condition[s].get("lang", np.full(dim, np.nan, np.float32)) for s in slots]
            batch["lang"] = torch.from_numpy(np.stack(rows).astype(np.float32))
        if self.rtc:
            batch.update(self._prefix(slots))
        batch = {k: v.to(self.device) for k, v in batch.items()}
        t0 = time.perf_counter()
        chunk = self.policy.predict_action_chunk(batch, self.sampling, generator=self.generator)
        if chunk.device.type == "cuda":
            torch.cuda.synchronize()
        self.latencies_ms.append((time.perf_counter() - t0) * 1e3)
        self.batch_sizes.append(n)
        return chunk[:n].float().cpu().numpy()

    def act(self, observations: dict[int, dict]) -> dict[int, np.ndarray]:
        """Next action per slot: {slot: obs dict} -> {slot: (A,) float32 (may hold NaN)}."""
        goals = {}
        for s, obs in observations.items():
            x, g = self._features(obs)
            if not self.history[s]:
                self.history[s].extend([x] * self.To)  # pad the first frame backwards
            else:
                self.history[s].append(x)
            goals[s] = g
        need = [
            s
            for s in observations
            if self.m > 0 or not self.queue[s] or len(self.queue[s]) == self.D
        ]
        if need:
            chunks = self._plan(need, goals)
            for s, chunk in zip(need, chunks):
                executable = chunk[self.To - 1 :]  # (Tp - To + 1, A): from the current step on
                if self.m > 0:
                    self.chunks[s].append((self.t[s], executable))
                    continue
                # the first chunk runs at once; later ones after the D committed actions
                start = 0 if self.plans[s] == 0 else self.D
                end = self.Ta + self.D
                self.queue[s].extend((self.plans[s], a) for a in executable[start:end])
                self.previous[s] = chunk
                self.plans[s] += 1
        out = {}
        for s in observations:
            if self.m > 0:
                out[s] = self._ensemble(s)
            else:
                chunk_id, out[s] = self.queue[s].popleft()
                self.boundary[s] = chunk_id != self.executing[s] and self.executing[s] >= 0
                self.executing[s] = chunk_id
            self.t[s] += 1
        return out

    def _prefix(self, slots: list[int]) -> dict[str, torch.Tensor]:
        """Inpainting targets of real-time chunking: the previous chunk shifted by Ta, so index
        j of the new chunk faces index j + Ta of the old one, (B, Tp, A), and weights (B, Tp)
        (zero where a slot has no previous chunk)."""
        A = self.cfg.dims["action_dim"]
        target = np.zeros((len(slots), self.Tp, A), np.float32)
        weight = np.zeros((len(slots), self.Tp), np.float32)
        for b, s in enumerate(slots):
            if self.previous[s] is not None:
                target[b, : self.Tp - self.Ta] = self.previous[s][self.Ta :]
                weight[b] = self.rtc_weights
        return {
            "prefix_action": torch.from_numpy(target),
            "prefix_weight": torch.from_numpy(weight),
        }

    def _ensemble(self, s: int) -> np.ndarray:
        """Weighted mean of every live chunk's action for this step (oldest weighs most)."""
        t = self.t[s]
        live = [(t0, c) for t0, c in self.chunks[s] if t - t0 < len(c)]
        self.chunks[s] = live
        preds = np.stack([c[t - t0] for t0, c in live])  # (n, A), oldest first
        w = np.exp(-self.m * np.arange(len(live)))
        return (w[:, None] * preds).sum(0) / w.sum()


def rtc_weights(Tp: int, To: int, Ta: int, D: int) -> np.ndarray:
    """(Tp,) inpainting weights of a new chunk against the previous one shifted by Ta.

    Index j of the new chunk is step j - (To - 1) from now. Entries j < To - 1 + D face actions
    already executed or committed: weight 1. The rest of the overlap, j < Tp - Ta, decays as in
    real-time chunking, w = c (e^c - 1) / (e - 1) with c falling linearly from 1 to 0; entries
    past the previous chunk are free (0).
    """
    w = np.zeros(Tp, np.float32)
    frozen, overlap = min(To - 1 + D, Tp - Ta), Tp - Ta
    w[:frozen] = 1.0
    for j in range(frozen, overlap):
        c = (overlap - j) / (overlap - frozen + 1)
        w[j] = c * math.expm1(c) / math.expm1(1.0)
    return w
