"""Our UNet against the reference implementation's, at the published low-dim configuration.

    python benchmarks/side_by_side.py --reference-dir DIR [--threads 2] [--repeats 3]

DIR is a checkout of the public Diffusion Policy code (github.com/real-stanford/diffusion_policy;
only `diffusion_policy/model/diffusion/` is imported, from outside this repository). Both
UNets are built with down_dims (256, 512, 1024), kernel 5, step embedding 256, FiLM scale and
bias, global condition 10 (To=2 x 4 obs + 2 goal), action 2, horizon 16, and timed in the same
process, alternating: a training step (forward, MSE to noise, backward, AdamW) at batch 256 with
`--threads` threads, and one denoiser call at batch 1 on one thread (eager, no TorchScript).
"""

import argparse
import statistics
import sys

import torch
from common import write_result

from diffpolicy import bench


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference-dir", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, args.reference_dir)
    from diffusion_policy.model.diffusion.conditional_unet1d import ConditionalUnet1D as Ref

    policy, cfg = bench._policy("published_lowdim.yaml")
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
    calls = {  # the reference's third positional argument is local_cond
        "diffpolicy": lambda x, t, c: ours(x, t, c),
        "reference": lambda x, t, c: ref(x, t, global_cond=c),
    }
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    B, T = cfg.train.batch_size, cfg.data.horizon
    x, noise = torch.randn(B, T, 2), torch.randn(B, T, 2)
    t, cond = torch.randint(0, 100, (B,)), torch.randn(B, cfg.global_cond_dim)
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}

    def train_step(name):
        loss = torch.nn.functional.mse_loss(calls[name](x, t, cond), noise)
        opts[name].zero_grad(set_to_none=True)
        loss.backward()
        opts[name].step()

    def denoise(name):
        with torch.inference_mode():
            calls[name](x[:1], t[:1], cond[:1])

    train_ms = {k: [] for k in models}
    step_ms = {k: [] for k in models}
    torch.set_num_threads(args.threads)
    for name in models:
        train_step(name)  # warm-up
    for _ in range(args.repeats):
        for name in models:  # alternating, so a load change hits both
            wall, _ = bench.time_call(lambda n=name: train_step(n), 1, warmup=0)
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
    write_result(
        "side_by_side",
        {
            "settings": {"batch": B, "train_threads": args.threads, "repeats": args.repeats},
            "models": result,
            "train_throughput_ratio": result["diffpolicy"]["train_samples_per_s"]
            / result["reference"]["train_samples_per_s"],
            "denoiser_latency_ratio": result["reference"]["denoiser_call_b1_t1_cpu_ms"]
            / result["diffpolicy"]["denoiser_call_b1_t1_cpu_ms"],
        },
    )


if __name__ == "__main__":
    main()
