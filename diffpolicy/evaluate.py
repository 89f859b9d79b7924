"""Evaluate a trained run: rollouts -> per-episode records -> the evaluation JSON.

Mode metrics come from `diffpolicy.metrics`, the same code the toy mode study uses.
Definitions:
    success_rate, collision_rate, timeout_rate, interpolation_rate (episode ended between routes:
    hit the start-facing side of an obstacle or stalled in front of it), mode_switch_rate
    (episodes that changed side before committing);
    mode_probs over successful episodes, demo_mode_probs from the training dataset,
    normalized_entropy = H(mode_probs) / ln K, tv_to_demos, kl_to_demos, modes_covered;
    commanded_mode_accuracy (null when unconditioned) overall, per mode and per instruction (a
    refused instruction is a miss; refusal_rate), commanded_success_rate (success among
    commanded episodes); grounding (language runs: per line the mode read and its confidence);
    chunk_latency_ms (mean over policy calls, with the mean batch size);
    path_roughness, path_jerk, action_roughness (each also relative to the demos') and
    boundary_jump_ratio (see `smoothness`);
    95% bootstrap intervals for every rate.

Mode metrics need a mode classifier: the env reports `info["mode"]` at the end of an episode and
the demos have mode labels. Without one (a foreign env, unlabelled demos) every mode metric is
null and the JSON carries a one-line `note` saying why (`mode_note`). Path metrics need the ee
path (Dict observations with `observation`); without it they are null.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from diffpolicy import metrics
from diffpolicy.files import write_json
from diffpolicy.rollout import EpisodeRecord


def training_demos(cfg):
    """The demos the run was trained on, read once per evaluation (None if gone or unreadable:
    the evaluation itself does not need them, only the comparisons and plots do)."""
    from diffpolicy.dataset import load_demos
    from diffpolicy.errors import DatasetError

    if not cfg.data.dataset or not Path(cfg.data.dataset).is_file():
        return None
    try:
        return load_demos(cfg.data.dataset)
    except DatasetError:
        return None


def demo_mode_probs(demos) -> list[float] | None:
    """(K,) mode probabilities of the demonstrations, or None without demos or modes."""
    if demos is None or demos.num_modes == 0:
        return None
    counts = demos.mode_counts().astype(float)
    return (counts / max(counts.sum(), 1)).tolist()


MODE_METRICS = (
    "mode_probs",
    "normalized_entropy",
    "normalized_entropy_ci95",
    "modes_covered",
    "tv_to_demos",
    "tv_to_demos_ci95",
    "kl_to_demos",
    "interpolation_rate",
    "interpolation_rate_ci95",
    "mode_switch_rate",
    "mode_switch_rate_ci95",
    "commanded_mode_accuracy",
    "commanded_mode_accuracy_ci95",
)
"""Keys of the evaluation JSON that need a mode classifier (null without one)."""


def mode_note(records: list[EpisodeRecord], num_modes: int, env_id: str) -> str | None:
    """Why the mode metrics are null (one line), or None when there is a mode classifier: the
    run knows modes (its demos had labels) and the env reported `info["mode"]` at the end of
    its episodes (those that ended without an error)."""
    if num_modes == 0:
        return "no mode metrics: the training demos have no mode labels (num_modes 0)"
    ended = [r for r in records if r.error is None]
    if ended and not any(r.mode_reported for r in ended):
        return f"no mode metrics: {env_id} reports no info['mode'] (no mode classifier)"
    return None


def demo_smoothness(demos) -> dict | None:
    """Mean path roughness, path jerk and action roughness of the demonstrations, computed
    exactly as for rollouts (ee path = the first two entries of `observation`; the path values
    are None when the file has no such key)."""
    if demos is None or not demos.episodes:
        return None
    act = [metrics.roughness(e.actions)[0] for e in demos.episodes]
    out = {"path_roughness": None, "path_jerk": None, "action_roughness": _nanmean(act)}
    obs = [e.obs.get("observation") for e in demos.episodes]
    if all(o is not None and o.ndim == 2 and o.shape[1] >= 2 for o in obs):
        path = [metrics.roughness(o[:, :2]) for o in obs]
        out.update(
            path_roughness=_nanmean([p[0] for p in path]),
            path_jerk=_nanmean([p[1] for p in path]),
        )
    return out


def _nanmean(values) -> float | None:
    """Mean of the finite values, None when there is none."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else None


def smoothness(records: list[EpisodeRecord], demo: dict | None) -> dict:
    """Trajectory quality next to the demos': per-episode path roughness (mean |second
    difference| of the ee path), path jerk (mean squared third difference) and action roughness
    (the same of the executed actions), each averaged with a 95% interval and as a ratio to the
    demos' value; and the chunk-boundary jump: the mean step |a_t - a_t-1| into a new chunk
    relative to the mean step within a chunk (1.0 = boundaries are invisible).
    Episodes without an ee path (`EpisodeRecord.path` empty: no Dict observation with an
    `observation` key) add nothing to the path values; with none, they and the demos' are None."""
    done = [r for r in records if len(r.actions) >= 4]
    path = np.array([metrics.roughness(np.asarray(r.path)) for r in done if r.path])
    path = path.reshape(-1, 2)  # (episodes with a path, 2)
    per = {
        "path_roughness": path[:, 0],
        "path_jerk": path[:, 1],
        "action_roughness": [metrics.roughness(np.stack(r.actions))[0] for r in done],
    }
    demo = dict(demo or {})
    if not len(path):  # no ee path in the rollouts: nothing to compare the demos' with
        demo.update(path_roughness=None, path_jerk=None)
    out: dict = {}
    for name, values in per.items():
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]  # episodes too short for the difference
        out[name] = float(v.mean()) if len(v) else None
        out[f"{name}_ci95"] = list(metrics.bootstrap_ci(v)) if len(v) else None
        ref = demo.get(name)
        out[f"demo_{name}"] = ref
        out[f"{name}_rel_demos"] = out[name] / ref if ref and out[name] is not None else None
        if ref and len(v):
            out[f"{name}_rel_demos_ci95"] = [x / ref for x in out[f"{name}_ci95"]]
    jumps = np.array([metrics.step_jumps(np.stack(r.actions), r.boundaries) for r in done])
    ratio = metrics.jump_ratio(jumps) if len(done) else math.nan
    out["boundary_jump_ratio"] = None if math.isnan(ratio) else ratio
    if out["boundary_jump_ratio"] is not None:
        ci = metrics.bootstrap_ci(jumps, metrics.jump_ratio)  # nan: resamples without a jump
        out["boundary_jump_ratio_ci95"] = None if any(map(math.isnan, ci)) else list(ci)
    return out


def aggregate(
    records: list[EpisodeRecord],
    num_modes: int,
    demo_probs: list[float] | None,
    latency_ms: list[float],
    batch_sizes: list[int],
    note: str | None = None,
) -> dict:
    """Evaluation JSON (see module docstring) from per-episode records. `note` (from
    `mode_note`): there is no mode classifier, so the `MODE_METRICS` are None and the note is
    kept in the JSON."""
    n = len(records)

    def rate(flags: np.ndarray) -> tuple[float, list[float]]:
        return float(flags.mean()) if n else math.nan, list(metrics.bootstrap_ci(flags))

    success = np.array([r.success for r in records], dtype=float)
    collision = np.array([r.collision for r in records], dtype=float)
    timeout = np.array([r.timeout for r in records], dtype=float)
    interp = np.array([r.between_modes for r in records], dtype=float)
    switched = np.array([r.mode_switches > 0 for r in records], dtype=float)
    errors = np.array([r.error is not None for r in records], dtype=float)
    modes = np.array([r.mode if r.success else -1 for r in records], dtype=np.int64)
    probs = metrics.mode_probs(modes, num_modes)
    out: dict = {"episodes": n}
    for name, flags in [
        ("success_rate", success),
        ("collision_rate", collision),
        ("timeout_rate", timeout),
        ("interpolation_rate", interp),
        ("mode_switch_rate", switched),
        ("error_rate", errors),
    ]:
        out[name], out[f"{name}_ci95"] = rate(flags)
    succ_modes = modes[modes >= 0]
    out["mode_probs"] = probs.tolist()
    out["demo_mode_probs"] = demo_probs
    out["normalized_entropy"] = metrics.normalized_entropy(probs)
    out["normalized_entropy_ci95"] = list(
        metrics.bootstrap_ci(
            succ_modes, lambda m: metrics.normalized_entropy(metrics.mode_probs(m, num_modes))
        )
    )
    out["modes_covered"] = int((probs > 0).sum())
    out["num_modes"] = num_modes
    if demo_probs is not None and len(succ_modes):
        q = np.asarray(demo_probs)
        out["tv_to_demos"] = metrics.tv_distance(probs, q)
        out["kl_to_demos"] = metrics.kl_divergence(probs, q)
        out["tv_to_demos_ci95"] = list(
            metrics.bootstrap_ci(
                succ_modes, lambda m: metrics.tv_distance(metrics.mode_probs(m, num_modes), q)
            )
        )
    else:
        out["tv_to_demos"] = out["kl_to_demos"] = None
    commanded = [r for r in records if r.commanded_mode is not None]
    if commanded:
        hit = np.array(
            [r.mode == r.commanded_mode and not r.refused for r in commanded], dtype=float
        )
        out["commanded_mode_accuracy"], out["commanded_mode_accuracy_ci95"] = (
            float(hit.mean()),
            list(metrics.bootstrap_ci(hit)),
        )
        per = {}
        for k in sorted({r.commanded_mode for r in commanded}):
            sel = np.array([r.commanded_mode == k for r in commanded])
            per[str(k)] = float(hit[sel].mean())
        out["commanded_mode_accuracy_per_mode"] = per
        texts = sorted({r.instruction for r in commanded if r.instruction})
        if texts:
            per_text = {
                t: float(np.mean([h for r, h in zip(commanded, hit) if r.instruction == t]))
                for t in texts
            }
            out["commanded_mode_accuracy_per_instruction"] = per_text
            out["commanded_mode_accuracy_worst_instruction"] = min(per_text.values())
        out["refusal_rate"] = float(np.mean([r.refused for r in commanded]))
        out["commanded_success_rate"] = float(np.mean([r.success for r in commanded]))
    else:
        out["commanded_mode_accuracy"] = None
    out["chunk_latency_ms"] = float(np.mean(latency_ms)) if latency_ms else None
    out["chunk_latency_p95_ms"] = float(np.percentile(latency_ms, 95)) if latency_ms else None
    out["mean_batch_size"] = float(np.mean(batch_sizes)) if batch_sizes else None
    out["episode_length_mean"] = float(np.mean([r.length for r in records])) if n else None
    if note is not None:
        out.update(dict.fromkeys(MODE_METRICS), note=note)
        out.pop("commanded_mode_accuracy_per_mode", None)
        out.pop("commanded_mode_accuracy_per_instruction", None)
        out.pop("commanded_mode_accuracy_worst_instruction", None)
    return out


def evaluate_run(
    run_dir: str | Path,
    episodes: int,
    n_envs: int = 8,
    json_path: str | Path | None = None,
    video_dir: str | Path | None = None,
    mode: int | str | None = None,
    instruction: str | None = None,
    guidance: float | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    seed: int | None = None,
    report_dir: str | Path | None = None,
    progress: bool = True,
    instructions: str | None = None,
    action_steps: int | None = None,
    delay: int | None = None,
    rtc: bool | None = None,
    constant_images: bool | None = None,
    lowpass: int | None = None,
    temporal_ensemble: float | None = None,
    threshold: float | None = None,
) -> dict:
    """Load a run, roll it out, aggregate, and write JSON / videos / report as asked.

    mode: an int K (command mode K), "all" (cycle through every mode), or None.
    instruction: a sentence (language-conditioned runs), or None; a grounded run refuses one it
        cannot ground (UserError) and reports the mode it read (result["grounding"]).
    instructions: "train" | "val" | "test" | a "MODE<TAB>TEXT" file (language-conditioned runs):
        episode i commands the i-th commanded line in turn, so commanded-mode accuracy is
        measured, overall, per mode and per line; result["grounding"] has the text-level
        grounding of every line, off-task ones ("-") included.
    sampler, steps, lowpass, guidance, action_steps, delay, rtc, temporal_ensemble: evaluation-
        time values of policy.sampler, policy.num_inference_steps, policy.lowpass,
        policy.guidance and control.n_action_steps, .delay, .rtc, .temporal_ensemble (the
        control keys only shape the controller, so any 1 <= Ta <= Tp - To + 1 works without
        retraining); None keeps the run's own. They are applied to the run's config and
        validated there.
    constant_images: the ablation eval.constant_images (camera frames replaced by grey).
    threshold: policy.grounding_threshold of a language run (None: the run's own).
    With a conditioned run and no command, the unconditional branch is evaluated (guidance 0).
    """
    import torch

    from diffpolicy.checkpoint import load_policy, load_run_config
    from diffpolicy.config import replace_values
    from diffpolicy.rollout import rollout

    torch.set_num_threads(1)
    cfg = load_run_config(run_dir)
    num_modes = int(cfg.dims.get("num_modes", 0))
    check_command(cfg, mode, instruction, instructions, num_modes)
    commanded = any(x is not None for x in (mode, instruction, instructions))
    if not commanded and cfg.policy.condition != "none" and guidance is None:
        guidance = 0.0
    cfg = replace_values(
        cfg,
        {
            "policy.sampler": sampler,
            "policy.num_inference_steps": steps,
            "policy.lowpass": lowpass,
            "policy.guidance": guidance,
            "control.n_action_steps": action_steps,
            "control.delay": delay,
            "control.rtc": rtc,
            "control.temporal_ensemble": temporal_ensemble,
            "eval.constant_images": constant_images,
            "policy.grounding_threshold": threshold,
        },
    )
    policy, cfg = load_policy(run_dir, cfg=cfg)
    # phrasing sets and mode names need the demos before the rollout; otherwise load them after
    # it, so a camera dataset's frames are not held while the envs run
    demos = training_demos(cfg) if instructions is not None else None
    condition_fn, grounding = make_condition_fn(
        cfg, policy, mode, instruction, instructions, num_modes, demos
    )
    if grounding and instruction is not None and progress:
        line = grounding["lines"][0]
        print(
            f"grounded {instruction!r} -> {line['grounded']} (confidence {line['confidence']:.2f})"
        )
    seed = cfg.eval.seed if seed is None else seed
    n_video = 3 if video_dir or report_dir else 0
    records, stats = rollout(
        policy,
        cfg,
        episodes,
        n_envs=n_envs,
        seed=seed,
        condition_fn=condition_fn,
        video_episodes=n_video,
        progress=progress,
    )
    demos = demos if demos is not None else training_demos(cfg)
    note = mode_note(records, num_modes, cfg.env_id)
    if note and progress:
        print(f"note: {note}")
    result = aggregate(
        records,
        num_modes,
        demo_mode_probs(demos),
        stats["latency_ms"],
        stats["batch_sizes"],
        note=note,
    )
    result.update(smoothness(records, demo_smoothness(demos)))
    result.update(
        run_dir=str(run_dir),
        env_id=cfg.env_id,
        policy_type=cfg.policy.type,
        sampler=cfg.policy.sampler,
        steps=cfg.policy.num_inference_steps,
        lowpass=cfg.policy.lowpass,
        action_steps=cfg.control.n_action_steps,
        delay=cfg.control.delay,
        rtc=cfg.control.rtc,
        temporal_ensemble=cfg.control.temporal_ensemble,
        seed=seed,
        guidance=cfg.policy.guidance,
        command=_describe_command(mode, instruction, instructions),
        grounding=grounding,
        envs=n_envs,
        seconds=stats["seconds"],
        episodes_per_min=60 * episodes / max(stats["seconds"], 1e-9),
        policy_time_share=stats["policy_seconds"] / max(stats["seconds"], 1e-9),
        records=[r.summary() for r in records],
    )
    if video_dir:
        from diffpolicy.report import write_videos

        result["videos"] = write_videos(video_dir, stats["frames"])
    if report_dir:
        from diffpolicy.report import write_eval_report

        write_eval_report(
            report_dir,
            demos,
            result,
            records,
            stats["frames"],
            policy=policy,
            cfg=cfg,
            seed=seed,
            condition_fn=condition_fn,
        )
    if json_path:
        write_json(json_path, result)
    return result


def _describe_command(mode, instruction, instructions) -> str | None:
    if mode is not None:
        return f"mode {mode}"
    if instruction is not None:
        return f"instruction {instruction!r}"
    if instructions is not None:
        return f"instructions {instructions}"
    return None


def check_command(cfg, mode, instruction, instructions, num_modes: int) -> None:
    """UserError for a command the run cannot take (before anything is loaded)."""
    from diffpolicy.errors import UserError

    cond = cfg.policy.condition
    if sum(x is not None for x in (mode, instruction, instructions)) > 1:
        raise UserError("give only one of --mode, --instruction, --instructions(-file)")
    if mode is not None and cond != "mode":
        raise UserError(f"--mode needs a mode-conditioned run (this run has condition={cond})")
    if instruction is not None and cond != "language":
        raise UserError(f"--instruction needs a language-conditioned run (condition={cond})")
    if instructions is not None and cond != "language":
        raise UserError(f"--instructions needs a language-conditioned run (condition={cond})")
    if instruction is not None and not instruction.strip():
        raise UserError("--instruction must not be empty")
    if mode is not None and mode != "all" and not 0 <= int(mode) < num_modes:
        raise UserError(f"--mode {mode} out of range: the run has modes 0..{num_modes - 1}")


def ground_lines(
    policy, cfg, rows: list, mode_names, labelled: bool = True
) -> tuple[dict, np.ndarray | None]:
    """Ground each (mode or None, text) row with the run's classifier -> (summary, (N,) grounded
    mode per row, -1 refused). The summary has per line the mode read and its confidence, the
    text-level accuracy on commanded rows and the refusal rate of off-task rows (mode None).
    `labelled=False`: the rows' modes are unknown (a user's sentence), so no rate is computed.
    Runs without a grounder: ({}, None)."""
    from diffpolicy.grounding import decide, ground

    grounder = getattr(policy.cond_encoder, "grounder", None)
    if grounder is None:
        return {}, None
    threshold = cfg.policy.grounding_threshold
    probs = ground(grounder, [t for _, t in rows], cfg.policy.language_model)
    grounded, conf = decide(probs, threshold)
    name = lambda k: "refused" if k < 0 else str(mode_names[k]) if k < len(mode_names) else str(k)  # noqa: E731
    lines = [
        {
            "mode": None if m is None else name(m),
            "text": t,
            "grounded": name(int(g)),
            "best": name(int(b)),
            "confidence": float(c),
            "off_task_probability": float(p[-1]),
        }
        for (m, t), g, b, c, p in zip(rows, grounded, probs[:, :-1].argmax(1), conf, probs)
    ]
    cmd = [i for i, (m, _) in enumerate(rows) if m is not None and labelled]
    off = [i for i, (m, _) in enumerate(rows) if m is None and labelled]
    return {
        "threshold": threshold,
        "commanded_lines": len(cmd),
        "text_accuracy": float(np.mean([grounded[i] == rows[i][0] for i in cmd])) if cmd else None,
        "refusal_rate": float(np.mean([grounded[i] < 0 for i in cmd])) if cmd else None,
        "off_task_lines": len(off),
        "off_task_refusal_rate": float(np.mean([grounded[i] < 0 for i in off])) if off else None,
        "lines": lines,
    }, grounded


def mode_names(cfg, demos, num_modes: int) -> list[str]:
    """The run's mode names: the training demos', else the env's, else "0", "1", ..."""
    names = list(demos.mode_names) if demos is not None and demos.mode_names else []
    if not names and num_modes:
        from envs import make_env

        env = make_env(cfg.env_id, **cfg.env_kwargs)
        names = list(getattr(env.unwrapped, "mode_names", ()))
        env.close()
    return names + [str(k) for k in range(len(names), num_modes)]


def make_condition_fn(cfg, policy, mode, instruction, instructions, num_modes, demos=None):
    """Per-episode command -> (fn, grounding summary or None); fn: episode index ->
    (controller condition, commanded mode or None, text or None).

    mode: K or "all" (cycles). instruction: one sentence; a classifier-grounded run refuses it
    (UserError, naming the best guess and its confidence) when it cannot ground it.
    instructions: "train" | "val" | "test" | a file (grounding.instruction_set): episode i
    commands the i-th commanded line in turn; a refused line's episode runs unconditioned and
    counts as a miss (condition["refused"]). fn is None when nothing is commanded.
    """
    from diffpolicy import language
    from diffpolicy.errors import UserError
    from diffpolicy.grounding import instruction_set

    names = mode_names(cfg, demos, num_modes)
    if mode is not None:

        def by_mode(i: int):
            k = i % num_modes if mode == "all" else int(mode)
            return {"mode": k}, k, None

        return by_mode, None
    if instruction is None and instructions is None:
        return None, None
    rows = (
        [(None, instruction.strip())]
        if instruction is not None
        else instruction_set(instructions, cfg.env_id, names, demos)
    )
    summary, grounded = ground_lines(policy, cfg, rows, names, labelled=instruction is None)
    if instruction is not None and grounded is not None and grounded[0] < 0:
        line = summary["lines"][0]
        raise UserError(
            f"cannot ground {instruction!r}: best guess {line['best']!r} at confidence "
            f"{line['confidence']:.2f} (threshold {summary['threshold']:g}), off-task "
            f"probability {line['off_task_probability']:.2f}; rephrase it"
        )
    if grounded is None:  # the policy reads the sentence embedding itself
        table = dict(
            zip(
                [t for _, t in rows],
                language.embed([t for _, t in rows], cfg.policy.language_model),
            )
        )
        conds = [{"lang": table[t]} for _, t in rows]
    else:
        conds = [{"mode": int(g)} if g >= 0 else {"mode": -1, "refused": True} for g in grounded]
    if instruction is not None:
        return (lambda i: (conds[0], None, instruction)), summary or None
    cmd = [i for i, (m, _) in enumerate(rows) if m is not None]
    if not cmd:
        raise UserError(f"--instructions {instructions}: no commanded lines (all are off-task)")

    def by_line(i: int):
        j = cmd[i % len(cmd)]
        return conds[j], rows[j][0], rows[j][1]

    return by_line, summary or None
