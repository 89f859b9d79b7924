"""The CUDA path on a GPU: CUDA-graph sampling (exactness and latency) and bf16 training.

    python benchmarks/gpu.py [--quick]        -> benchmarks/results/gpu.json

Sampling: each (config, sampler, steps, batch) is timed eagerly and as a replayed CUDA graph
(fp32 and bf16 autocast), after checking that the graph returns the eager chunk for the same
noise. Rows: the default ReachAround policy (DPM-Solver++ 8), its 2-step student (ddim,
sample prediction, trailing spacing), and the published 65.8M config (DDPM-100 eager, which
has per-step noise and is never captured, and DPM-Solver++ 8).

With --inductor (results/gpu_inductor.json): the batch-1 chunk latency of the 2-step student and
the DPM++-8 teacher when the UNet body is compiled with torch.compile (inductor) before the
CUDA graph is captured, next to the graph of eager kernels, and the replay alone.

Training: samples/s of diffpolicy.train's step (loss, backward, clip, fused AdamW, EMA) in fp32
and under bf16 autocast, per config and batch size, on synthetic windows on the GPU.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from common import write_result

from diffpolicy.bench import _obs, _policy
from diffpolicy.train import ema_decay

STUDENT = ("policy.prediction_type=sample", "policy.timestep_spacing=trailing")
SAMPLING = (
    ("reach_around.yaml", (), "dpmpp", 8),
    ("reach_around.yaml", STUDENT, "ddim", 2),
    ("published_lowdim.yaml", (), "dpmpp", 8),
    ("published_lowdim.yaml", (), "ddpm", 100),
)


def cuda_ms(fn, repeats: int, warmup: int = 3) -> list[float]:
    """Wall milliseconds of `repeats` synchronized calls of fn, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def bench_sampling(batches: tuple[int, ...], repeats: int) -> list[dict]:
    rows = []
    for config, overrides, sampler, steps in SAMPLING:
        policy, cfg = _policy(config, overrides)
        policy = policy.cuda().eval()
        for batch in batches:
            obs = {k: v.cuda() for k, v in _obs(cfg, batch).items()}

            def call(seed: int | None = None):
                g = None if seed is None else torch.Generator("cuda").manual_seed(seed)
                return policy.predict_action_chunk(  # noqa: B023
                    obs,  # noqa: B023
                    sampler=sampler,  # noqa: B023
                    steps=steps,  # noqa: B023
                    generator=g,
                )

            row = {"config": config, "sampler": sampler, "steps": steps, "batch": batch}
            policy.cuda_graphs, policy.cuda_bf16 = False, False
            eager = call(0)  # the same noise for the exactness checks; timed calls draw their own
            row["eager_ms"] = statistics.median(cuda_ms(call, repeats))
            if sampler != "ddpm":
                policy.cuda_graphs = True
                graph = call(0)
                row["graph_max_abs_diff_vs_eager"] = float((graph - eager).abs().max())
                row["graph_ms"] = statistics.median(cuda_ms(call, repeats))
                policy.cuda_bf16 = True
                bf16 = call(0)
                row["graph_bf16_max_abs_diff_vs_fp32"] = float((bf16 - eager).abs().max())
                row["graph_bf16_ms"] = statistics.median(cuda_ms(call, repeats))
                policy.cuda_bf16 = False
            print("sampling", row, flush=True)
            rows.append(row)
    return rows


def bench_train(batches: tuple[int, ...], repeats: int) -> list[dict]:
    rows = []
    for config in ("reach_around.yaml", "published_lowdim.yaml"):
        for batch in batches:
            for bf16 in (False, True):
                torch.manual_seed(0)
                policy, cfg = _policy(config)
                policy = policy.cuda().train()
                ema = copy.deepcopy(policy).requires_grad_(False).eval()
                opt = torch.optim.AdamW(policy.parameters(), lr=1e-4, fused=True)
                N = 20_000
                data = {k: v.cuda() for k, v in _obs(cfg, N).items()}
                data["action"] = torch.randn(N, cfg.data.horizon, 2, device="cuda")
                counter = [0]

                def step():
                    idx = torch.randint(0, N, (batch,), device="cuda")  # noqa: B023
                    b = {k: v[idx] for k, v in data.items()}  # noqa: B023
                    with torch.autocast("cuda", torch.bfloat16, enabled=bf16):  # noqa: B023
                        loss = policy.compute_loss(b)  # noqa: B023
                    opt.zero_grad(set_to_none=True)  # noqa: B023
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)  # noqa: B023
                    opt.step()  # noqa: B023
                    with torch.no_grad():
                        d = ema_decay(counter[0], cfg)  # noqa: B023
                        torch._foreach_lerp_(
                            list(ema.parameters()),  # noqa: B023
                            list(policy.parameters()),  # noqa: B023
                            1 - d,
                        )
                    counter[0] += 1  # noqa: B023

                ms = statistics.median(cuda_ms(step, repeats, warmup=5))
                row = {
                    "config": config,
                    "batch": batch,
                    "bf16_autocast": bf16,
                    "step_ms": ms,
                    "samples_per_s": batch / ms * 1e3,
                }
                print("train", row, flush=True)
                rows.append(row)
    return rows


def bench_inductor(repeats: int = 200) -> dict:
    out = {}
    for name, overrides, sampler, steps in (
        ("student_ddim2", STUDENT, "ddim", 2),
        ("teacher_dpmpp8", (), "dpmpp", 8),
    ):
        policy, cfg = _policy("reach_around.yaml", overrides)
        policy = policy.cuda().eval()
        obs = {k: v.cuda() for k, v in _obs(cfg, 1).items()}

        def call(seed: int | None = None):
            g = None if seed is None else torch.Generator("cuda").manual_seed(seed)
            return policy.predict_action_chunk(obs, sampler=sampler, steps=steps, generator=g)  # noqa: B023

        def replay_ms() -> float:
            key = next(k for k in policy._compiled if k[0] == "cuda_graph")  # noqa: B023
            graph = policy._compiled[key][1][0]  # noqa: B023
            return statistics.median(cuda_ms(graph.replay, repeats))

        ref = call(0)
        row = {"graph_ms": statistics.median(cuda_ms(call, repeats, warmup=10))}
        row["graph_replay_only_ms"] = replay_ms()
        t0 = time.perf_counter()
        policy.model.forward_film = torch.compile(policy.model.forward_film, dynamic=False)
        policy._compiled.clear()
        row["inductor_max_abs_diff"] = float((call(0) - ref).abs().max())
        row["compile_s"] = time.perf_counter() - t0
        row["inductor_graph_ms"] = statistics.median(cuda_ms(call, repeats, warmup=10))
        row["inductor_graph_replay_only_ms"] = replay_ms()
        print(name, row, flush=True)
        out[name] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and batch sizes")
    ap.add_argument("--inductor", action="store_true", help="only the torch.compile comparison")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    if args.inductor:
        write_result("gpu_inductor", {"torch": torch.__version__, "rows": bench_inductor()})
        return
    reps = 5 if args.quick else 30
    sampling = bench_sampling((1, 32) if args.quick else (1, 32, 256), reps)
    train = bench_train((256,) if args.quick else (256, 1024), reps)
    write_result(
        "gpu",
        {
            "settings": {"quick": args.quick, "repeats": reps, "tf32": True},
            "torch": torch.__version__,
            "sampling": sampling,
            "train": train,
        },
    )


if __name__ == "__main__":
    main()
