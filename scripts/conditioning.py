"""Conditioning benchmark: commanded-mode accuracy, success under command, and the unconditional
branch of the same guided model, for trained mode / language runs of one task.

    diffpolicy train configs/reach_around_mode.yaml --dataset data/reach_around.hdf5 \\
        --out runs/cond/ra_mode train.threads=1
    diffpolicy train configs/reach_around_lang.yaml --dataset data/reach_around.hdf5 \\
        --out runs/cond/ra_lang train.threads=1
    python benchmarks/conditioning.py reach_around --mode-run runs/cond/ra_mode \\
        --lang-run runs/cond/ra_lang --episodes 200

Each evaluation goes into benchmarks/results/conditioning.json under the task's name (other
tasks' entries are kept), with the machine, the run's training budget and the settings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch
from common import train_budget

from diffpolicy.checkpoint import load_run_config
from diffpolicy.evaluate import evaluate_run, write_json

KEEP = (
    "episodes", "guidance", "command", "action_steps", "success_rate", "success_rate_ci95",
    "collision_rate",
    "commanded_mode_accuracy", "commanded_mode_accuracy_ci95", "commanded_mode_accuracy_per_mode",
    "commanded_mode_accuracy_per_instruction", "commanded_success_rate", "mode_probs",
    "normalized_entropy", "normalized_entropy_ci95", "modes_covered", "interpolation_rate",
    "chunk_latency_ms", "seconds",
)  # fmt: skip


def training_budget(run: str, trained_on: str | None) -> dict:
    """train_budget plus the conditioning settings of the run."""
    cfg = load_run_config(run)
    p = cfg.policy
    return train_budget(run, trained_on) | {
        "config": {
            "condition": p.condition,
            "cond_dropout": p.cond_dropout,
            "cond_embed_dim": cfg.model.cond_embed_dim,
            "language_grounding": p.language_grounding,
            "language_model": (p.language_model or "packaged all-MiniLM-L6-v2")
            if p.condition == "language"
            else None,
        }
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("task", help="key in the results file, e.g. reach_around")
    p.add_argument("--mode-run")
    p.add_argument("--lang-run")
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--envs", type=int, default=8)
    p.add_argument("--action-steps", type=int, help="Ta at evaluation (default: the run's)")
    p.add_argument("--guided", type=float, default=0.0, help="also evaluate commands at this scale")
    p.add_argument("--json", default="benchmarks/results/conditioning.json")
    p.add_argument("--trained-on", metavar="TEXT", help="where the runs were trained, e.g. a GPU")
    a = p.parse_args()
    plan = []  # (run, name, evaluate_run kwargs)
    if a.mode_run:
        plan += [(a.mode_run, "mode_all", {"mode": "all"})]
        plan += [(a.mode_run, "mode_unconditional", {"guidance": 0.0})]
        if a.guided:
            plan += [(a.mode_run, f"mode_all_w{a.guided:g}", {"mode": "all", "guidance": a.guided})]
    if a.lang_run:
        plan += [(a.lang_run, "lang_train_templates", {"instructions": "train"})]
        plan += [(a.lang_run, "lang_heldout_templates", {"instructions": "heldout"})]
        plan += [(a.lang_run, "lang_unconditional", {"guidance": 0.0})]
        if a.guided:
            for split in ("train", "heldout"):
                kw = {"instructions": split, "guidance": a.guided}
                plan += [(a.lang_run, f"lang_{split}_templates_w{a.guided:g}", kw)]
    out = Path(a.json)
    results = json.loads(out.read_text()) if out.is_file() else {}
    results["machine"] = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "note": "evaluation on CPU, 2 cores shared with other jobs; one torch thread per process",
    }
    task = results.setdefault(a.task, {})
    for run, name, kw in plan:
        r = evaluate_run(
            run, a.episodes, n_envs=a.envs, progress=False, action_steps=a.action_steps, **kw
        )
        task[name] = {k: r.get(k) for k in KEEP} | {"train": training_budget(run, a.trained_on)}
        print(f"{a.task}/{name}: " + json.dumps({k: task[name][k] for k in KEEP[:7]}))
        write_json(out, results)


if __name__ == "__main__":
    main()
