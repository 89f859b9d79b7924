"""Our UNet against the reference implementation's, at the published low-dim configuration.

    python benchmarks/side_by_side.py --reference-dir DIR [--threads 2] [--repeats 3]

DIR is a checkout of the public Diffusion Policy code (github.com/real-stanford/diffusion_policy;
only `diffusion_policy/model/diffusion/` is imported, from outside this repository). Both
UNets are built with down_dims (256, 512, 1024), kernel 5, step embedding 256, FiLM scale and
bias, global condition 10 (To=2 x 4 obs + 2 goal), action 2, horizon 16, and timed in the same
process, alternating: the library's training step (`diffpolicy.train.train_step`: MSE of the
UNet's output to the noise, backward, clip, AdamW from `make_optimizer`, EMA) at batch
`--batch` (default: the config's 256) with `--threads` threads, and one denoiser call at batch
1 on one thread (eager, no TorchScript).
"""

import argparse
import copy
import statistics
import sys

import torch

from diffpolicy import bench
from diffpolicy.train import make_optimizer, train_step


class NoiseMSE(torch.nn.Module):
    """forward(batch) = MSE of call(x, t, cond) to batch["noise"]: the same loss for both UNets."""

    def __init__(self, model: torch.nn.Module, call):
        super().__init__()
        self.model, self.call = model, call

    def forward(self, b: dict) -> torch.Tensor:
        return torch.nn.functional.mse_loss(self.call(b["x"], b["t"], b["cond"]), b["noise"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference-dir", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, help="training batch (default: the config's)")
    ap.add_argument("--results", help="directory of the results file (default: benchmarks/results)")
    args = ap.parse_args()
    sys.path.insert(0, args.reference_dir)  # the reference's code, not this repository's
    from diffusion_policy.model.diffusion.conditional_unet1d import ConditionalUnet1D as Ref

    policy, cfg = bench.policy_from_config("published_lowdim.yaml")
    ours = policy.model
    ref = Ref(
        input_dim=2,
        global_cond_dim=cfg.global_cond_dim,
        diffusion_step_embed_dim=256,
        down_dims=[256, 512, 1024],
        kernel_size=5,
        n_groups=8,
        cond_predict_scale=True,
    )
    models = {"diffpolicy": ours, "reference": ref}
    losses = {  # the reference's third positional argument is local_cond
        "diffpolicy": NoiseMSE(ours, lambda x, t, c: ours(x, t, c)),
        "reference": NoiseMSE(ref, lambda x, t, c: ref(x, t, global_cond=c)),
    }
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    B, T = args.batch or cfg.train.batch_size, cfg.data.horizon
    batch = {"x": torch.randn(B, T, 2), "noise": torch.randn(B, T, 2)}
    batch |= {"t": torch.randint(0, 100, (B,)), "cond": torch.randn(B, cfg.global_cond_dim)}
    emas = {k: copy.deepcopy(m).requires_grad_(False) for k, m in models.items()}
    opts = {k: make_optimizer(m, cfg, torch.device("cpu")) for k, m in models.items()}

    def step(name: str) -> None:  # at the peak LR and the largest EMA decay
        t = cfg.train
        train_step(
            losses[name], batch, models[name], emas[name], opts[name], t.lr, t.ema_max_decay,
            t.grad_clip,
        )  # fmt: skip

    def denoise(name: str) -> None:
        with torch.inference_mode():
            losses[name].call(batch["x"][:1], batch["t"][:1], batch["cond"][:1])

    train_ms = {k: [] for k in models}
    step_ms = {k: [] for k in models}
    torch.set_num_threads(args.threads)
    for name in models:
        step(name)  # warm-up
    for _ in range(args.repeats):
        for name in models:  # alternating, so a load change hits both
            wall, _ = bench.time_call(lambda n=name: step(n), 1, warmup=0)
            train_ms[name] += wall
    torch.set_num_threads(1)
    for _ in range(3):
        for name in models:
            _, cpu = bench.time_call(lambda n=name: denoise(n), 10, warmup=2)
            step_ms[name] += cpu
    result = {}
    for name in models:
        med = statistics.median(train_ms[name])
        result[name] = {
            "params": params[name],
            "train_step_ms": med,
            "train_samples_per_s": B / med * 1e3,
            "denoiser_call_b1_t1_cpu_ms": statistics.median(step_ms[name]),
        }
        print(name, result[name], flush=True)
    bench.write_result(
        "side_by_side",
        {
            "settings": {"batch": B, "train_threads": args.threads, "repeats": args.repeats},
            "models": result,
            "train_throughput_ratio": result["diffpolicy"]["train_samples_per_s"]
            / result["reference"]["train_samples_per_s"],
            "denoiser_latency_ratio": result["reference"]["denoiser_call_b1_t1_cpu_ms"]
            / result["diffpolicy"]["denoiser_call_b1_t1_cpu_ms"],
        },
        args.results,
    )


if __name__ == "__main__":
    main()
