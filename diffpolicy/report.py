"""Figures, videos and the HTML report.

Top-view path plots are drawn over the task layout (`env.unwrapped.layout()`, stored in the demo
file): obstacles as circles, start/goal regions as rectangles, the success line if any. Files
without a layout (or without the ee position in `observation`) are shown by their actions over
time instead. Runs with cameras also get the policy's own view with sampled chunks drawn on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from diffpolicy.files import atomic_path, save_figure, write_json, write_text


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def mode_colors(num_modes: int) -> list:
    """One colour per mode (tab10/tab20, then hsv for many); index -1 (no mode) is grey."""
    plt = _plt()
    cmap = plt.get_cmap("tab10" if num_modes <= 10 else "tab20" if num_modes <= 20 else "hsv")
    return [cmap(k % cmap.N if num_modes <= 20 else k / num_modes) for k in range(num_modes)]


def _palette(mode_names: Sequence[str]) -> list:
    """Colours indexed by mode: the names themselves when they are colours (Pick: "red"; not
    numbered modes: matplotlib reads "0" and "1" as grey levels)."""
    from matplotlib.colors import is_color_like

    def colour(n: str) -> bool:
        return is_color_like(n) and not n.replace(".", "", 1).isdigit()

    if mode_names and all(colour(n) for n in mode_names):
        return list(mode_names)
    return mode_colors(max(len(mode_names), 1))


def _region(ax, region, color: str, label: str) -> None:
    from matplotlib.patches import Rectangle

    if isinstance(region, dict) and "low" in region and "high" in region:
        (x0, y0), (x1, y1) = region["low"][:2], region["high"][:2]
    elif isinstance(region, (list, tuple)) and len(region) == 4:
        x0, y0, x1, y1 = region
    else:
        return
    ax.add_patch(
        Rectangle((x0, y0), x1 - x0, y1 - y0, fill=True, alpha=0.15, color=color, label=label)
    )


def draw_layout(ax, layout: dict) -> None:
    """Obstacles, regions and success line of a task layout on a matplotlib axis (x right, y up)."""
    from matplotlib.patches import Circle

    for x, y, r in layout.get("obstacles", []):
        ax.add_patch(Circle((x, y), r, color="0.3", zorder=3))
    _region(ax, layout.get("start_region"), "tab:green", "start")
    _region(ax, layout.get("goal_region"), "tab:orange", "goal")
    for cube in layout.get("cubes", []):
        ax.plot(*cube[:2], marker="s", markersize=8, color=cube[3] if len(cube) > 3 else "k")
    if layout.get("success_y") is not None:
        ax.axhline(layout["success_y"], color="tab:orange", ls="--", lw=1)


def plot_paths(
    out: str | Path,
    layout: dict,
    paths: Sequence[tuple[np.ndarray, int]],
    mode_names: Sequence[str],
    title: str = "",
    ax=None,
) -> None:
    """Top view of end-effector paths coloured by mode. `paths`: [(xy (T, 2), mode), ...]."""
    plt = _plt()
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(5, 5))
    colors = _palette(mode_names)
    seen = set()
    for xy, mode in sorted(paths, key=lambda p: p[1]):  # legend in mode order
        color = colors[mode] if 0 <= mode < len(colors) else "0.6"
        label = None
        if mode not in seen:
            seen.add(mode)
            label = mode_names[mode] if 0 <= mode < len(mode_names) else "no mode"
        ax.plot(xy[:, 0], xy[:, 1], color=color, lw=0.8, alpha=0.7, label=label)
    draw_layout(ax, layout)
    ax.set_aspect("equal")
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    ax.set_title(title, fontsize=10)
    if len(seen) <= 12:  # outside the axes, so it never hides obstacles or paths
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if own and out is not None:
        fig.tight_layout()
        save_figure(fig, out, dpi=120)
        plt.close(fig)


def plot_commanded_paths(
    out: str | Path,
    layout: dict,
    records: Sequence,
    mode_names: Sequence[str],
    title: str = "",
) -> None:
    """Paths coloured by the *commanded* mode, one panel per commanded mode; a path whose
    executed mode differs from the command is drawn dashed. `records`: EpisodeRecords with
    `path` [(x, y), ...], `commanded_mode`, `mode`."""
    plt = _plt()
    commanded = sorted({r.commanded_mode for r in records if r.commanded_mode is not None})
    if not commanded:
        return
    cols = min(len(commanded), 6)
    rows = -(-len(commanded) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3 * cols, 3 * rows), sharex=True, sharey=True, squeeze=False
    )
    colors = mode_colors(max(len(mode_names), 1))
    for ax, k in zip(axes.flat, commanded):
        mine = [r for r in records if r.commanded_mode == k]
        hits = sum(r.mode == k for r in mine)
        for r in mine[:100]:
            xy = np.asarray(r.path)
            if len(xy) == 0:
                continue
            ls = "-" if r.mode == k else "--"
            ax.plot(xy[:, 0], xy[:, 1], color=colors[k % len(colors)], lw=0.8, alpha=0.7, ls=ls)
        draw_layout(ax, layout)
        ax.set_aspect("equal")
        name = mode_names[k] if 0 <= k < len(mode_names) else str(k)
        ax.set_title(f"command {name}: {hits}/{len(mine)}", fontsize=8)
    for ax in list(axes.flat)[len(commanded) :]:
        ax.axis("off")
    fig.suptitle(title or "paths by commanded mode (dashed: another mode)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, out, dpi=110)
    plt.close(fig)


def has_paths(demos) -> bool:
    """The demos can be drawn as top-view paths: a layout, and the ee (x, y) leading every
    episode's `observation` (T, >= 2)."""
    return bool(demos.layout) and all(
        "observation" in e.obs
        and e.obs["observation"].ndim == 2
        and e.obs["observation"].shape[1] >= 2
        for e in demos.episodes
    )


def plot_demo_actions(axes, demos, max_episodes: int = 200) -> None:
    """Action dimensions 0 and 1 (one per axis in `axes`) over time, one line per episode,
    coloured by mode (one colour when the file has no modes)."""
    names = list(demos.mode_names) or [str(k) for k in range(demos.num_modes)]
    colors = _palette(names)
    shown = demos.episodes[:max_episodes]
    for k, ax in enumerate(axes):
        seen = set()
        for e in sorted(shown, key=lambda e: e.mode):  # legend in mode order
            labelled = 0 <= e.mode < len(names)
            color = colors[e.mode] if labelled else "0.5" if names else "tab:blue"
            label = None
            if e.mode not in seen:
                seen.add(e.mode)
                label = names[e.mode] if labelled else "no mode"
            ax.plot(e.actions[:, k], color=color, lw=0.8, alpha=0.7, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel(f"action[{k}]")
        if 1 < len(seen) <= 12:
            ax.legend(fontsize=7, loc="best")
    if len(demos.episodes) > max_episodes:
        axes[0].set_title(f"first {max_episodes} episodes", fontsize=8)


def camera_keys(demos) -> list[str]:
    """Observation keys of the first episode that hold camera frames, in file order."""
    from diffpolicy.dataset import is_image

    return [k for k, v in demos.episodes[0].obs.items() if is_image(v)] if demos.episodes else []


def plot_demos(out: str | Path, demos, title: str = "") -> None:
    """`diffpolicy info --plot`: top-view paths by mode when the file has a layout and the ee
    position (`has_paths`), else actions 0 and 1 over time; below them, when the file has
    cameras, the first and middle frame of the first episode per camera key."""
    plt = _plt()
    cams = camera_keys(demos)
    paths = has_paths(demos)
    n_main = 1 if paths else min(demos.episodes[0].actions.shape[1], 2)
    n_frames = 2 * len(cams)
    width = max(5.0 if paths else 4.0 * n_main + 1.5, 1.6 * n_frames)
    fig = plt.figure(figsize=(width, 5 + (1.9 if cams else 0)))
    grid = fig.add_gridspec(2 if cams else 1, 1, height_ratios=[5, 1.9] if cams else [1])
    main = grid[0].subgridspec(1, n_main)
    axes = [fig.add_subplot(main[0, j]) for j in range(n_main)]
    if paths:
        plot_paths(
            None,
            demos.layout,
            [(e.obs["observation"][:, :2], e.mode) for e in demos.episodes],
            demos.mode_names,
            ax=axes[0],
        )
    else:
        plot_demo_actions(axes, demos)
        title = f"{title}\nactions over time: no layout or ee path in the file"
    fig.suptitle(title.strip(), fontsize=10)
    if cams:
        row = grid[1].subgridspec(1, n_frames)
        first = demos.episodes[0]
        for j, key in enumerate(cams):
            for i, t in enumerate((0, len(first) // 2)):
                ax = fig.add_subplot(row[0, 2 * j + i])
                ax.imshow(first.obs[key][t], interpolation="nearest")
                ax.set_title(f"{key} t={t}", fontsize=8)
                ax.set_xticks([])
                ax.set_yticks([])
    fig.tight_layout()
    save_figure(fig, out, dpi=120)
    plt.close(fig)


def camera_chunks(policy, cfg, seed: int, k: int = 8, condition: dict | None = None) -> list:
    """The policy's view of the episode with `seed`: the env rebuilt as the run's and reset,
    `k` chunks sampled from that first observation in one batch (generator seeded by `seed`),
    each chunk from the current step on projected into every camera of the run.

    Returns [{"key": camera key, "frame": (H, W, 3) uint8, "pixels": (k, Tp - To + 1, 2)
    (column, row), "seed": seed}, ...], one per camera key. `condition` as for the controller.
    """
    from diffpolicy.controller import RecedingHorizonController
    from diffpolicy.rollout import shown
    from envs import make_env

    ctrl = RecedingHorizonController(policy, cfg, n_slots=k, seed=seed)
    env = make_env(cfg.env_id, **cfg.env_kwargs)
    try:
        obs, _ = env.reset(seed=seed)
        chunks = ctrl.first_chunks(shown(obs, cfg), condition)[:, ctrl.To - 1 :]
        points = env.unwrapped.action_points(chunks.reshape(-1, chunks.shape[-1]))  # (k*T, 3)
        views = []
        for key in cfg.data.image_keys:
            pixels = env.unwrapped.camera_pixels(key.removesuffix("_image"), points)  # (k*T, 2)
            frame = np.asarray(obs[key], np.uint8)
            views.append(
                {"key": key, "frame": frame, "pixels": pixels.reshape(k, -1, 2), "seed": seed}
            )
        return views
    finally:
        env.close()


def plot_camera_chunks(out: str | Path, views: Sequence[dict], title: str = "") -> None:
    """One panel per view of `camera_chunks`: the frame with each sampled chunk drawn as a
    polyline (a dot at its first action), one colour per chunk."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(views), figsize=(3.4 * len(views), 3.8), squeeze=False)
    colors = mode_colors(max(len(v["pixels"]) for v in views))
    for ax, v in zip(axes[0], views):
        h, w = v["frame"].shape[:2]
        ax.imshow(v["frame"], extent=(0, w, h, 0), interpolation="nearest")
        for color, px in zip(colors, v["pixels"]):
            ax.plot(px[:, 0], px[:, 1], color=color, lw=1.4, alpha=0.9)
            ax.plot(px[0, 0], px[0, 1], "o", color=color, markersize=4, mec="k", mew=0.5)
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{v['key']}, seed {v['seed']}: {len(v['pixels'])} chunks", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, out, dpi=120)
    plt.close(fig)


def plot_mode_bars(
    out: str | Path, mode_names: Sequence[str], series: dict[str, Sequence[float]], title: str = ""
) -> None:
    """Grouped bar chart of mode probabilities, e.g. {"demos": [...], "diffusion": [...]}."""
    plt = _plt()
    k = len(mode_names)
    fig, ax = plt.subplots(figsize=(max(4, 0.35 * k * max(len(series), 1) + 2), 3))
    width = 0.8 / max(len(series), 1)
    x = np.arange(k)
    for j, (label, probs) in enumerate(series.items()):
        if probs is None:
            continue
        ax.bar(x + (j - (len(series) - 1) / 2) * width, probs, width, label=label)
    ax.set_xticks(x, mode_names, rotation=90 if k > 6 else 0, fontsize=7 if k > 6 else 9)
    ax.set_ylabel("probability")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out, dpi=120)
    plt.close(fig)


def plot_actions(out: str | Path, records, episodes: int = 3) -> None:
    """Executed actions over time for the first `episodes` episodes, one panel each, with the
    steps where a new chunk began marked (dotted lines): jumps at the lines are chunk-boundary
    jerk, wiggles between them are the sampler's own roughness."""
    plt = _plt()
    shown = [r for r in records if len(r.actions) >= 2][:episodes]
    if not shown:
        return
    fig, axes = plt.subplots(len(shown), 1, figsize=(8, 2.2 * len(shown)), squeeze=False)
    for ax, r in zip(axes[:, 0], shown):
        a = np.stack(r.actions)  # (T, A)
        for t in np.flatnonzero(r.boundaries):
            ax.axvline(t, color="0.7", lw=0.8, ls=":")
        for k in range(a.shape[1]):
            ax.plot(a[:, k], lw=1.2, label=f"a[{k}]")
        ax.set_title(f"episode {r.episode} ({r.mode_name})", fontsize=9)
        ax.set_xlabel("control step")
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    save_figure(fig, out, dpi=110)
    plt.close(fig)


def write_videos(out_dir: str | Path, frames: dict[int, list]) -> list[str]:
    """One MP4 per episode (libx264 from imageio-ffmpeg); returns the file paths."""
    import imageio.v2 as imageio

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for episode, images in sorted(frames.items()):
        path = out_dir / f"episode_{episode:04d}.mp4"
        with atomic_path(path) as tmp:
            imageio.mimwrite(
                tmp,
                [np.asarray(f)[..., :3] for f in images],
                fps=10,
                codec="libx264",
                macro_block_size=16,
                ffmpeg_log_level="quiet",  # its own stderr lines would break the one-line errors
            )
        paths.append(str(path))
    return paths


def write_eval_report(
    out_dir: str | Path,
    demos,
    result: dict,
    records,
    frames,
    policy=None,
    cfg=None,
    seed: int | None = None,
    condition_fn=None,
) -> None:
    """metrics.json, paths.png (policy next to the training `demos`, None if unavailable),
    modes.png, actions.png (actions over time, chunk boundaries marked), videos/, index.html;
    with `policy` and the evaluated `cfg` of a run with cameras also camera.png: the starts of
    episodes 0 and 1 (seeds `seed`, `seed` + 1, commanded as `condition_fn` says) in the
    policy's own view with 8 sampled chunks each."""

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plt = _plt()
    names = list(demos.mode_names) if demos else [str(k) for k in range(result["num_modes"])]
    layout = demos.layout if demos else {}
    colored = [(np.asarray(r.path), r.mode if r.success else -1) for r in records[:200] if r.path]
    demo_paths = bool(demos) and has_paths(demos)
    if colored or demo_paths:  # no ee path anywhere (e.g. a Box observation): no paths.png
        fig, axes = plt.subplots(1, 2, figsize=(10, 5), sharex=True, sharey=True)
        if demo_paths:
            plot_paths(
                None,
                layout,
                [(e.obs["observation"][:, :2], e.mode) for e in demos.episodes[:200]],
                names,
                title=f"demos ({len(demos.episodes)})",
                ax=axes[0],
            )
        entropy = result["normalized_entropy"]
        plot_paths(
            None,
            layout,
            colored,
            names,
            ax=axes[1],
            title=f"{result['policy_type']}: success {result['success_rate']:.2f}"
            + (f", entropy {entropy:.2f}" if entropy is not None else ""),
        )
        fig.tight_layout()
        save_figure(fig, out_dir / "paths.png", dpi=110)
        plt.close(fig)
    if result["mode_probs"] is not None:  # null without a mode classifier
        plot_mode_bars(
            out_dir / "modes.png",
            names,
            {"demos": result["demo_mode_probs"], result["policy_type"]: result["mode_probs"]},
            title="mode probabilities (successful episodes)",
        )
    plot_actions(out_dir / "actions.png", records)
    commanded = any(r.commanded_mode is not None for r in records)
    if commanded:
        plot_commanded_paths(out_dir / "commanded.png", layout, records, names)
    camera = policy is not None and cfg is not None and bool(cfg.data.image_keys)
    if camera:
        seed = cfg.eval.seed if seed is None else seed
        views = []
        for i in (0, 1):
            condition = condition_fn(i)[0] if condition_fn else None
            views += camera_chunks(policy, cfg, seed + i, condition=condition)
        grey = " (policy shown grey frames)" if getattr(cfg.eval, "constant_images", False) else ""
        plot_camera_chunks(
            out_dir / "camera.png",
            views,
            title=f"sampled chunks at the start of episodes 0, 1{grey}",
        )
    videos = write_videos(out_dir / "videos", frames) if frames else []
    write_json(out_dir / "metrics.json", result)
    rows = {k: v for k, v in result.items() if isinstance(v, (int, float, str)) or v is None}
    html = ["<h1>diffpolicy evaluation</h1>", "<table>"]
    html += [f"<tr><td>{k}</td><td>{_fmt(v)}</td></tr>" for k, v in rows.items()]
    html.append("</table>")
    if colored or demo_paths:
        html.append('<img src="paths.png" width="800">')
    if camera:
        html.append('<img src="camera.png" height="400">')
    if result["mode_probs"] is not None:
        html += ["<br>", '<img src="modes.png">']
    html.append('<br><img src="actions.png" width="800">')
    if commanded:
        html.append('<br><img src="commanded.png" width="800">')
    html += [f'<video src="videos/{Path(v).name}" controls width="320"></video>' for v in videos]
    write_text(out_dir / "index.html", _page("\n".join(html)))


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _page(body: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>diffpolicy</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 10px;"
        "border-bottom:1px solid #ddd}table{border-collapse:collapse}</style></head>"
        f"<body>{body}</body></html>"
    )


def comparison_table(summary: dict[str, dict]) -> str:
    """Plain-text table of the key numbers per policy type."""
    cols = [
        ("success", "success_rate"),
        ("collision", "collision_rate"),
        ("entropy", "normalized_entropy"),
        ("TV→demos", "tv_to_demos"),
        ("interp", "interpolation_rate"),
        ("ms/chunk", "chunk_latency_ms"),
    ]
    lines = [f"{'policy':<10}" + "".join(f"{c:>11}" for c, _ in cols) + "   mode probs"]
    for name, r in summary.items():  # null (no mode classifier, no data): "-"
        vals = "".join(f"{r[k]:>11.3f}" if r.get(k) is not None else f"{'-':>11}" for _, k in cols)
        probs = r.get("mode_probs")
        shown = f"[{' '.join(f'{p:.2f}' for p in probs)}]" if probs is not None else "-"
        lines.append(f"{name:<10}{vals}   {shown}")
    return "\n".join(lines)


def write_summary_page(
    out_dir: str | Path, summary: dict[str, dict], demos_plot: str | None, table: str
) -> None:
    """index.html of the quickstart: the comparison table and each policy's figures."""
    out_dir = Path(out_dir)
    body = ["<h1>diffpolicy quickstart</h1>", f"<pre>{table}</pre>"]
    if demos_plot:
        body.append(f'<h2>demonstrations</h2><img src="{demos_plot}" width="400">')
    for name in summary:
        body.append(f"<h2>{name}</h2>")
        body.append(f'<img src="{name}/paths.png" width="800"><br><img src="{name}/modes.png">')
        for v in sorted((out_dir / name / "videos").glob("*.mp4")):
            body.append(f'<video src="{name}/videos/{v.name}" controls width="320"></video>')
    write_text(out_dir / "index.html", _page("\n".join(body)))
