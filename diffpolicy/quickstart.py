"""The main job: collect ReachAround demos, train diffusion + mse + gmm, evaluate, report.

    diffpolicy quickstart --out outputs/quickstart

Writes OUT/demos.hdf5, OUT/demos.png, OUT/runs/<type>/ (run directories), OUT/<type>/ (each
policy's report), OUT/summary.json ({type: evaluation JSON}), OUT/index.html, and prints one
comparison table. All three policies get the same data, backbone and training budget.
"""

from __future__ import annotations

import time
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "reach_around.yaml"
POLICIES = ("diffusion", "mse", "gmm")


def quickstart(
    out: str | Path = "outputs/quickstart",
    episodes: int = 200,
    eval_episodes: int = 200,
    workers: int = 2,
    overrides: tuple[str, ...] = (),
    policies: tuple[str, ...] = POLICIES,
    progress: bool = True,
) -> dict:
    """Run the pipeline end to end; return {policy type: evaluation JSON}."""
    from diffpolicy.collect import collect
    from diffpolicy.config import load_config, with_dataset
    from diffpolicy.dataset import load_demos
    from diffpolicy.evaluate import evaluate_run, write_json
    from diffpolicy.report import comparison_table, plot_paths, write_summary_page
    from diffpolicy.train import train

    out = Path(out)
    cfg0 = load_config(CONFIG, overrides)  # a bad override fails before anything is written
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    demo_file = out / "demos.hdf5"
    print(f"[1/4] collecting {episodes} demos of {cfg0.env_id} -> {demo_file}")
    collect(cfg0.env_id, episodes, str(demo_file), workers=workers, seed=0, progress=progress)
    demos = load_demos(demo_file)
    plot_paths(
        out / "demos.png",
        demos.layout,
        [(e.obs["observation"][:, :2], e.mode) for e in demos.episodes],
        demos.mode_names,
        title=f"{len(demos.episodes)} demos",
    )
    timings["collect_s"] = time.perf_counter() - t0

    summary = {}
    for kind in policies:
        t1 = time.perf_counter()
        cfg = with_dataset(load_config(CONFIG, (*overrides, f"policy.type={kind}")), demo_file)
        run_dir = out / "runs" / kind
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        print(f"[2/4] training {kind} ({cfg.train.steps} steps) -> {run_dir}")
        train(cfg, run_dir, progress=progress)
        timings[f"train_{kind}_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        print(f"[3/4] evaluating {kind} on {eval_episodes} episodes")
        summary[kind] = evaluate_run(
            run_dir, eval_episodes, n_envs=cfg.eval.envs, report_dir=out / kind, progress=progress
        )
        timings[f"eval_{kind}_s"] = time.perf_counter() - t2

    table = comparison_table(summary)
    for r in summary.values():
        r.pop("records", None)
    timings["total_s"] = time.perf_counter() - t0
    write_json(out / "summary.json", summary)
    write_json(out / "timings.json", timings)
    write_summary_page(out, summary, "demos.png", table)
    print("[4/4] report:", out / "index.html")
    print(table)
    print(f"total {timings['total_s'] / 60:.1f} min")
    return summary
