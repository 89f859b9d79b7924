"""Fast sampling paths of a diffusion policy: one interface, `FastSampler.sample`.

The global condition is constant over a reverse process, so the UNet's FiLM parameters are
computed once per call (`ConditionalUnet1D.film_table`) and every step runs only the UNet body.
On top of that, where `Sampling.compiled` is set:

- CPU, eval mode, models under 5M parameters: the body is a frozen TorchScript trace per input
  shape (several times fewer per-op overheads at batch 1). A trace holds its own copy of the
  weights, so large models (the published 65.8M) run the body eagerly.
- CUDA, deterministic samplers (ddim, dpmpp) without the x0 trace: the whole call (FiLM table
  and every step) is captured once per shape as a CUDA graph and replayed. Per-step
  coefficients are Python floats baked into the graph, so a replay computes exactly what an
  eager call would.

Compiled artifacts are cached per shape and rebuilt when the weights change: the cache key
holds every parameter's version counter, which PyTorch bumps on each in-place update
(optimizer steps, EMA, `load_state_dict`), the one signal it gives that a frozen copy is stale.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from diffpolicy.config import Sampling
from diffpolicy.models.unet1d import ConditionalUnet1D
from diffpolicy.schedulers import NoiseSchedule, X0Guide, sample, with_lowpass

TRACE_MAX_PARAMS = 5_000_000
"""Largest UNet traced for CPU sampling (a frozen trace copies the weights)."""


class FastSampler:
    """Samples x_0 for one UNet and noise schedule over precomputed FiLM tables.

    Example:
        fast = FastSampler(unet, schedule, prediction_type="epsilon", clip_sample=True)
        x_0 = fast.sample(cond, x_T, Sampling("dpmpp", 8))      # (B, Tp, A), normalized
    """

    def __init__(
        self,
        model: ConditionalUnet1D,
        schedule: NoiseSchedule,
        prediction_type: str,
        clip_sample: bool,
    ):
        self.model, self.schedule = model, schedule
        self.prediction_type, self.clip_sample = prediction_type, clip_sample
        self.traceable = sum(p.numel() for p in model.parameters()) < TRACE_MAX_PARAMS
        self._cache: dict[tuple, tuple] = {}  # key -> (weights version, artifact)

    def sample(
        self,
        cond: Tensor,
        x_T: Tensor,
        sampling: Sampling,
        generator: torch.Generator | None = None,
        return_x0: bool = False,
        x0_guide: X0Guide | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """cond (B, Gc), x_T (B, Tp, A) -> normalized x_0 (B, Tp, A), unclipped (and the x0_hat
        trace (S, B, Tp, A) with `return_x0`). `sampling.guidance` is not applied here: the
        caller passes the condition of the single pass it wants. `sampling.lowpass` smooths every
        step's x0 estimate before `x0_guide`; a call with `x0_guide` (per-call tensors) is not
        captured as a CUDA graph, one with only the lowpass is."""
        kw = dict(
            sampler=sampling.sampler,
            steps=sampling.steps,
            prediction_type=self.prediction_type,
            clip_sample=self.clip_sample,
            indexed=True,
        )
        timesteps = self.schedule.plan(sampling.sampler, sampling.steps, x_T.device).timesteps
        graphable = sampling.sampler != "ddpm" and not return_x0 and x0_guide is None
        if sampling.compiled and x_T.device.type == "cuda" and graphable:
            return self._graph_replay(timesteps, cond, x_T, kw, sampling.lowpass)
        film = self.model.film_table(timesteps, cond)  # (S, B, F, 1)
        body = self._body(x_T, film[0]) if sampling.compiled else self.model.forward_film
        return sample(
            lambda x_t, i: body(x_t, film[i]),
            self.schedule,
            x_T,
            generator=generator,
            return_x0=return_x0,
            x0_guide=with_lowpass(x0_guide, sampling.lowpass, x_T),
            **kw,
        )

    def cached_shapes(self, kind: str) -> int:
        """How many compiled artifacts of `kind` ("jit" | "cuda_graph") are cached."""
        return sum(key[0] == kind for key in self._cache)

    def clear(self) -> None:
        """Drop every compiled artifact (they are rebuilt on the next call)."""
        self._cache.clear()

    def _cached(self, key: tuple, build):
        version = tuple(p._version for p in self.model.parameters())
        hit = self._cache.get(key)
        if hit is None or hit[0] != version:
            if len(self._cache) >= 8:
                self._cache.clear()
            hit = self._cache[key] = (version, build())
        return hit[1]

    def _body(self, x: Tensor, film: Tensor):
        """(x_t (B, Tp, A), film (B, F, 1)) -> model output: a frozen trace on CPU in eval mode
        for small models, else the eager body."""
        if not (self.traceable and x.device.type == "cpu" and not self.model.training):
            return self.model.forward_film

        def build():
            body = FilmBody(self.model).eval()
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarning / TorchScript deprecation
                return torch.jit.freeze(torch.jit.trace(body, (x, film), check_trace=False))

        # traced graphs bake in shapes (and each Conv1d's choice of kernel, which depends on B, T)
        return self._cached(("jit", tuple(x.shape), tuple(film.shape), x.dtype), build)

    def _graph_replay(
        self, timesteps: Tensor, cond: Tensor, x_T: Tensor, kw: dict, lowpass: int
    ) -> Tensor:
        """Replay of one captured call with static (x_T, cond) input buffers (the lowpass
        projector is a constant of the graph)."""

        def run(x: Tensor, c: Tensor) -> Tensor:
            film = self.model.film_table(timesteps, c)  # (S, B, F, 1)
            return sample(
                lambda x_t, i: self.model.forward_film(x_t, film[i]),
                self.schedule,
                x,
                x0_guide=with_lowpass(None, lowpass, x),
                **kw,
            )

        def build():
            static_x, static_cond = x_T.clone(), cond.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up outside the capture (allocator, kernels)
                for _ in range(2):
                    run(static_x, static_cond)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = run(static_x, static_cond)
            return graph, static_x, static_cond, static_out

        key = (
            "cuda_graph",
            kw["sampler"],
            kw["steps"],
            lowpass,
            tuple(x_T.shape),
            tuple(cond.shape),
        )
        graph, static_x, static_cond, static_out = self._cached(key, build)
        static_x.copy_(x_T)
        static_cond.copy_(cond)
        graph.replay()
        return static_out.clone()


class FilmBody(nn.Module):
    """forward(x, film) = unet.forward_film(x, film), as a module for torch.jit.trace."""

    def __init__(self, unet: ConditionalUnet1D):
        super().__init__()
        self.unet = unet

    def forward(self, x: Tensor, film: Tensor) -> Tensor:
        return self.unet.forward_film(x, film)
