"""Command line: `diffpolicy <command>` (also `python -m diffpolicy`).

Exit codes: 0 ok, 2 user error (one line on stderr, no traceback), 130 interrupted.
Heavy imports (torch, pybullet) happen inside the commands that need them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from diffpolicy.config import LIMITS, SAMPLERS
from diffpolicy.errors import UserError
from diffpolicy.files import check_output, check_output_dir, write_json, writer_lock


def _one_line(text) -> str:
    """`text` with line breaks and other unprintable characters escaped (a path may hold
    them; h5py's texts do): an error is always exactly one line."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse's own convention)
        self.exit(2, f"{self.prog}: error: {_one_line(message)}\n")


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{v} must be >= 0")
    return v


def _pos_int(text: str) -> int:
    v = _nonneg_int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} must be >= 1")
    return v


def _at_most(limit: int):
    """A positive integer no larger than `limit` (argparse type)."""

    def parse(text: str) -> int:
        v = _pos_int(text)
        if v > limit:
            raise argparse.ArgumentTypeError(f"{v} is larger than the limit {limit}")
        return v

    return parse


MAX_WORKERS = 256
"""Most collection worker processes (each one is a PyBullet process)."""


def _float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} must be finite")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="diffpolicy", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    c = sub.add_parser("collect", help="run a scripted expert and write demos (HDF5)")
    c.add_argument("env_id", help="gymnasium id; module:EnvId imports module first")
    c.add_argument("--episodes", type=_at_most(LIMITS["eval.episodes"]), required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--workers", type=_at_most(MAX_WORKERS), default=1)
    c.add_argument(
        "--cameras", nargs="+", default=None, metavar="NAME",
        help="camera observations to record (e.g. top), as <name>_image keys",
    )  # fmt: skip
    c.add_argument("--image-size", type=_at_most(512), default=None, help="camera frame side")
    c.add_argument("--seed", type=_nonneg_int, default=0)
    c.add_argument("--mode", type=_nonneg_int, default=None, help="follow only this mode")
    c.add_argument("--keep-failures", action="store_true")
    c.add_argument(
        "--expert",
        metavar="MODULE:CALLABLE",
        help="your expert: callable(env, mode=None, rng=Generator) -> obj with reset(obs, info), "
        "act(obs); default: the task's own (diffpolicy envs)",
    )
    c.add_argument(
        "--append",
        action="store_true",
        help="add the episodes to an existing --out file (atomically; seeds continue after it)",
    )

    i = sub.add_parser("info", help="summarize a demo file")
    i.add_argument("file")
    i.add_argument("--plot", metavar="PNG", help="top-view plot of the demos' paths by mode")
    i.add_argument("--json", metavar="FILE", help="also write the summary as JSON")

    x = sub.add_parser("export", help="write a demo file as a LeRobotDataset v3 directory")
    x.add_argument("file")
    x.add_argument("--format", choices=("lerobot",), default="lerobot")
    x.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) directory")
    x.add_argument("--fps", type=_float, help="default: the env's control rate")

    m = sub.add_parser("import", help="read a LeRobotDataset v3 directory into a demo file")
    m.add_argument("dir")
    m.add_argument("--out", required=True, metavar="FILE")

    t = sub.add_parser("train", help="train a policy from a config")
    t.add_argument("config", nargs="?")
    t.add_argument("--dataset")
    t.add_argument("--out")
    t.add_argument("--resume", metavar="RUN_DIR")
    t.add_argument("overrides", nargs="*", metavar="key=value")

    d = sub.add_parser("distill", help="distill a diffusion run into a few-step student run")
    d.add_argument("teacher", metavar="TEACHER_RUN")
    d.add_argument("--out", required=True)
    d.add_argument("--dataset", help="default: the teacher's dataset")
    d.add_argument("overrides", nargs="*", metavar="key=value")

    e = sub.add_parser("eval", help="roll out a trained run and measure modes")
    e.add_argument("run_dir")
    e.add_argument("--episodes", type=_at_most(LIMITS["eval.episodes"]), default=50)
    e.add_argument("--envs", type=_at_most(LIMITS["eval.envs"]), default=8)
    e.add_argument("--json", metavar="FILE")
    e.add_argument("--video", metavar="DIR", help="write MP4s of the first episodes")
    e.add_argument("--report", metavar="DIR", help="write plots, videos and index.html")
    cmd = e.add_mutually_exclusive_group()
    cmd.add_argument("--mode", help="command mode K, or 'all' to cycle through the modes")
    cmd.add_argument("--instruction", help="language command (language-conditioned runs)")
    cmd.add_argument(
        "--instructions",
        choices=("train", "val", "test"),
        help="cycle through a phrasing set: the dataset's own (train), or the packaged "
        "validation / test phrasings written apart from the grammar (envs/phrasings)",
    )
    cmd.add_argument(
        "--instructions-file",
        metavar="FILE",
        help='your phrasings: one "MODE<TAB>TEXT" per line (MODE a mode name or index, '
        '"-" for a sentence that should be refused)',
    )
    e.add_argument("--guidance", type=_float, default=None, help="sets policy.guidance")
    e.add_argument("--sampler", choices=SAMPLERS, help="sets policy.sampler")
    e.add_argument("--steps", type=_pos_int, help="sets policy.num_inference_steps")
    e.add_argument(
        "--lowpass",
        type=_nonneg_int,
        help="keep the chunk's N lowest temporal frequencies in the sampler (policy.lowpass)",
    )
    e.add_argument(
        "--action-steps",
        type=_pos_int,
        help="actions executed per chunk before re-planning (Ta; sets control.n_action_steps)",
    )
    e.add_argument(
        "--delay",
        type=_nonneg_int,
        help="simulated inference delay D in control steps, 0..Ta (sets control.delay)",
    )
    e.add_argument(
        "--rtc",
        action="store_const",
        const=True,
        help="real-time chunking: inpaint each chunk to the committed actions (control.rtc)",
    )
    e.add_argument(
        "--constant-images",
        action="store_const",
        const=True,
        help="ablation: show the policy grey frames instead of its cameras' images",
    )
    e.add_argument("--seed", type=_nonneg_int)
    e.add_argument(
        "--threshold",
        type=_float,
        help="a language run's grounding confidence below which a sentence is refused "
        "(sets policy.grounding_threshold; choose it with `ground --instructions-file`)",
    )

    gr = sub.add_parser("ground", help="which mode a language run reads in each sentence")
    gr.add_argument("run_dir")
    gr.add_argument("text", nargs="*", help="sentences (or --instructions-file)")
    gr.add_argument("--instructions-file", metavar="FILE", help='"MODE<TAB>TEXT" per line')
    gr.add_argument("--json", metavar="FILE")

    q = sub.add_parser("quickstart", help="collect -> train 3 policies -> evaluate -> report")
    q.add_argument("--out", default="outputs/quickstart")
    q.add_argument("--episodes", type=_pos_int, default=200, help="demos to collect")
    q.add_argument("--eval-episodes", type=_pos_int, default=200)
    q.add_argument("overrides", nargs="*", metavar="key=value")

    m = sub.add_parser("modes", help="the toy mode study: collapse, averaging, interpolation")
    m.add_argument("--quick", action="store_true")
    m.add_argument("--out", default="outputs/modes")
    m.add_argument("--json", metavar="FILE")

    b = sub.add_parser("bench", help="speed benchmarks (collection, latency, training)")
    b.add_argument("--quick", action="store_true")
    b.add_argument("--json", metavar="FILE")
    b.add_argument("--only", nargs="*", default=[], choices=("collect", "latency", "train"))
    return p


def _camera_kwargs(a) -> dict:
    """Env arguments of `collect --cameras ... --image-size N`."""
    kwargs: dict = {}
    if a.cameras:
        kwargs["cameras"] = list(a.cameras)
    if a.image_size is not None:
        if not a.cameras:
            raise UserError("--image-size needs --cameras")
        kwargs["image_size"] = a.image_size
    return kwargs


def cmd_collect(a) -> int:
    from diffpolicy.collect import collect

    check_output(a.out, parents=False)
    with writer_lock(a.out):
        stats = collect(
            a.env_id,
            a.episodes,
            a.out,
            workers=a.workers,
            seed=a.seed,
            mode=a.mode,
            keep_failures=a.keep_failures,
            append=a.append,
            env_kwargs=_camera_kwargs(a),
            expert=a.expert,
        )
    print(
        f"wrote {stats.kept} episodes to {a.out} ({stats.tried} tried, "
        f"{stats.seconds:.1f} s, {stats.episodes_per_s:.1f} episodes/s); "
        f"modes: {stats.mode_counts}"
    )
    return 0


def cmd_info(a) -> int:
    from diffpolicy.dataset import load_demos, summarize
    from diffpolicy.report import camera_keys, plot_demos

    for out in (a.plot, a.json):
        if out:
            check_output(out)
    demos = load_demos(a.file)
    summary = summarize(demos)
    print(f"file:        {a.file}")
    print(f"env:         {summary['env_id'] or '(unknown)'}")
    print(f"episodes:    {summary['episodes']}")
    print(
        f"steps:       {summary['steps']} (length min {summary['length_min']}, "
        f"mean {summary['length_mean']:.1f}, max {summary['length_max']})"
    )
    print(f"obs keys:    {', '.join(f'{k}{v}' for k, v in summary['obs_shapes'].items())}")
    for key in camera_keys(demos):
        h, w = demos.episodes[0].obs[key].shape[1:3]
        print(f"cameras:     {key} {w}x{h}")
    print(f"action dim:  {summary['action_dim']}")
    print("modes:")
    for name, count in summary["modes"].items():
        share = count / max(summary["episodes"], 1)
        print(f"  {name:<16} {count:>6}  {share:6.1%}  {'#' * round(40 * share)}")
    if summary["instructions"]:
        print("sample instructions:")
        for text in summary["instructions"]:
            print(f"  - {text}")
    if a.json:
        write_json(a.json, summary)
    if a.plot:
        name = summary["env_id"] or Path(a.file).name
        plot_demos(a.plot, demos, title=f"{name}: {len(demos.episodes)} demos")
        print(f"plot:        {a.plot}")
    return 0


def cmd_export(a) -> int:
    from diffpolicy.lerobot import export_lerobot

    if a.fps is not None and not a.fps > 0:
        raise UserError(f"--fps must be positive, got {a.fps}")
    s = export_lerobot(a.file, a.out, fps=a.fps)
    cams = f", cameras {', '.join(s['cameras'])}" if s["cameras"] else ""
    state = ", ".join(f"{k} ({n})" for k, n in s["state_features"].items())
    print(
        f"wrote LeRobotDataset v3.0 {a.out}: {s['episodes']} episodes, {s['frames']} frames at "
        f"{s['fps']:g} fps, {s['tasks']} tasks; {state}{cams}"
    )
    return 0


def cmd_import(a) -> int:
    from diffpolicy.lerobot import import_lerobot

    s = import_lerobot(a.dir, a.out)
    print(
        f"wrote {s['episodes']} episodes ({s['frames']} frames) to {a.out}; "
        f"obs keys: {', '.join(s['obs_keys'])}; env: {s['env'] or '(none recorded)'}"
    )
    return 0


def train_from_cli(
    config_path: str | None,
    dataset: str | None,
    out: str | None,
    resume: str | None,
    overrides: list[str],
    progress: bool = True,
) -> Path:
    """`diffpolicy train`: a new run from CONFIG, or `--resume RUN_DIR` (a distilled student
    resumes against its teacher)."""
    import time

    from diffpolicy.checkpoint import load_run_config
    from diffpolicy.config import load_config, with_dataset
    from diffpolicy.distill import train_student
    from diffpolicy.train import train

    if resume:
        cfg, out_dir = load_run_config(resume, tuple(overrides)), resume
    elif not config_path:
        raise UserError("train needs a CONFIG file (or --resume RUN_DIR)")
    else:
        cfg = load_config(config_path, overrides)
        if dataset or cfg.data.dataset:
            cfg = with_dataset(cfg, dataset or cfg.data.dataset)
        out_dir = check_output_dir(out if out else Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    run = train_student if cfg.policy.teacher else train
    return run(cfg, out_dir, resume=bool(resume), progress=progress)


def cmd_train(a) -> int:
    config, overrides = a.config, list(a.overrides)
    if config is not None and "=" in config and not Path(config).exists():
        config, overrides = None, [config, *overrides]  # `train --resume RUN key=value ...`
    run_dir = train_from_cli(config, a.dataset, a.out, a.resume, overrides)
    print(f"run directory: {run_dir}")
    return 0


def cmd_distill(a) -> int:
    from diffpolicy.distill import distill

    check_output_dir(a.out)
    run_dir = distill(a.teacher, a.out, a.overrides, dataset=a.dataset)
    print(f"run directory: {run_dir}")
    return 0


def cmd_eval(a) -> int:
    from diffpolicy.evaluate import evaluate_run
    from diffpolicy.report import comparison_table

    if a.json:
        check_output(a.json)
    for out in (a.video, a.report):
        if out:
            check_output_dir(out)
    mode = a.mode
    if mode is not None and mode != "all":
        try:
            mode = int(mode)
        except ValueError:
            raise UserError(f"--mode {mode!r} must be an integer or 'all'") from None
    result = evaluate_run(
        a.run_dir,
        a.episodes,
        n_envs=a.envs,
        json_path=a.json,
        video_dir=a.video,
        mode=mode,
        instruction=a.instruction,
        instructions=a.instructions or (Path(a.instructions_file) if a.instructions_file else None),
        guidance=a.guidance,
        sampler=a.sampler,
        steps=a.steps,
        seed=a.seed,
        report_dir=a.report,
        action_steps=a.action_steps,
        delay=a.delay,
        rtc=a.rtc,
        lowpass=a.lowpass,
        constant_images=a.constant_images,
        threshold=a.threshold,
    )
    print(comparison_table({result["policy_type"]: result}))
    if result["commanded_mode_accuracy"] is not None:
        print(f"commanded-mode accuracy: {result['commanded_mode_accuracy']:.3f}")
    g = result.get("grounding")
    if g and g.get("commanded_lines", 0) + g.get("off_task_lines", 0) > 1:
        print(grounding_lines(g))
    return 0


def grounding_lines(g: dict) -> str:
    """Text-level grounding summary of a phrasing set, with the lines it got wrong."""
    out = []
    if g["commanded_lines"]:
        out.append(
            f"grounding: {g['text_accuracy']:.3f} of {g['commanded_lines']} commanded lines to "
            f"the right mode, {g['refusal_rate']:.3f} refused (threshold {g['threshold']:g})"
        )
    if g["off_task_lines"]:
        out.append(
            f"off-task lines refused: {g['off_task_refusal_rate']:.3f} of {g['off_task_lines']}"
        )
    for line in g["lines"]:
        if line["mode"] is not None and line["grounded"] != line["mode"]:
            out.append(
                f"  {line['mode']} -> {line['grounded']} ({line['confidence']:.2f}): {line['text']}"
            )
        elif line["mode"] is None and line["grounded"] != "refused":
            out.append(
                f"  off-task -> {line['grounded']} ({line['confidence']:.2f}): {line['text']}"
            )
    return "\n".join(out)


def cmd_ground(a) -> int:
    """Ground sentences or a phrasing file with a run's classifier, without rollouts."""
    from diffpolicy.checkpoint import load_policy, load_run_config
    from diffpolicy.evaluate import ground_lines, mode_names, training_demos
    from diffpolicy.grounding import instruction_set

    cfg = load_run_config(a.run_dir)
    if cfg.policy.condition != "language" or cfg.policy.language_grounding != "classifier":
        raise UserError(f"{a.run_dir} is not a language run with classifier grounding")
    if bool(a.text) == bool(a.instructions_file):
        raise UserError("give sentences or --instructions-file (one of them)")
    policy, cfg = load_policy(a.run_dir, cfg=cfg)
    demos = training_demos(cfg)
    names = mode_names(cfg, demos, int(cfg.dims["num_modes"]))
    if a.text:
        rows = [(None, t) for t in a.text]
    else:
        rows = instruction_set(Path(a.instructions_file), cfg.env_id, names, demos)
    g, _ = ground_lines(policy, cfg, rows, names, labelled=not a.text)
    if a.text:
        for line in g["lines"]:
            print(f"{line['grounded']}\t{line['confidence']:.2f}\t{line['text']}")
    else:
        from diffpolicy.grounding import MAX_WRONG, MIN_OFF_TASK, choose_threshold, threshold_curve

        g["threshold_curve"] = threshold_curve(g["lines"])
        print(grounding_lines(g))
        for c in g["threshold_curve"]:
            rates = [f"{k} {v:.3f}" for k, v in c.items() if k != "threshold" and v is not None]
            print(f"at threshold {c['threshold']:g}: " + ", ".join(rates))
        print(
            f"lowest threshold with <= {MAX_WRONG:g} wrong and >= {MIN_OFF_TASK:g} off-task "
            f"refused: {choose_threshold(g['threshold_curve']):g}"
        )
    if a.json:
        write_json(a.json, g)
    return 0


def cmd_quickstart(a) -> int:
    from diffpolicy.quickstart import quickstart

    check_output_dir(a.out)
    quickstart(
        a.out, episodes=a.episodes, eval_episodes=a.eval_episodes, overrides=tuple(a.overrides)
    )
    return 0


def cmd_modes(a) -> int:
    from diffpolicy.bench import write_result
    from diffpolicy.modes import run_study

    check_output_dir(a.out)
    if a.json:
        check_output(a.json)
    result = run_study(quick=a.quick, out_dir=a.out)
    if a.json:  # with the machine, command and revision, like every results file
        write_result(Path(a.json), result)
    print(f"mode study written to {a.out}")
    return 0


def cmd_bench(a) -> int:
    from diffpolicy.bench import run_bench, write_result

    if a.json:
        check_output(a.json)
    result = run_bench(quick=a.quick, only=tuple(a.only))
    if a.json:
        write_result(Path(a.json), result)
    return 0


COMMANDS = {
    "bench": cmd_bench,
    "collect": cmd_collect,
    "info": cmd_info,
    "export": cmd_export,
    "import": cmd_import,
    "train": cmd_train,
    "distill": cmd_distill,
    "eval": cmd_eval,
    "ground": cmd_ground,
    "quickstart": cmd_quickstart,
    "modes": cmd_modes,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may follow options (argparse stops at the first option)
        if hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"diffpolicy {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a vanished directory: what happened, in one line
        where = f": {e.filename}" if e.filename else ""
        text = _one_line(f"{e.strerror or e}{where}")
        print(f"diffpolicy {args.command}: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"diffpolicy {args.command}: interrupted", file=sys.stderr)
        return 130
