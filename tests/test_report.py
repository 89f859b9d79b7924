"""Figures: `info --plot` on any robomimic-layout file (paths, actions, camera frames) and the
evaluation report's camera view with sampled chunks (camera.png, only for runs with cameras)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from helpers import DEBUG, bimodal_demos

from diffpolicy import cli, report
from diffpolicy.dataset import Demos

ENV = "diffpolicy/ReachAround-v0"


def png_size(path) -> tuple[int, int]:
    """(width, height) of a PNG file, from its header (fails on anything else)."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def info_plot(capsys, path, png) -> str:
    code = cli.main(["info", str(path), "--plot", str(png)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert png.is_file() and min(png_size(png)) > 100
    return out


def write_foreign(path, modes: bool = False, camera: bool = False, action_dim: int = 3) -> None:
    """A file this project did not write: no layout, no `observation`, no env_args; with
    `camera`, uint8 frames (T, 16, 24, 3) under obs/wrist_image."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        for i in range(4):
            T = 9 + i
            g = data.create_group(f"demo_{i}")
            actions = rng.normal(size=(T, action_dim)).astype(np.float32)
            g.create_dataset("actions", data=actions)
            g.create_dataset("obs/foo", data=rng.normal(size=(T, 5)).astype(np.float32))
            if camera:
                frames = rng.integers(0, 256, (T, 16, 24, 3), dtype=np.uint8)
                g.create_dataset("obs/wrist_image", data=frames)
            if modes:
                g.attrs["mode"] = i % 2


@pytest.fixture(scope="module")
def camera_file(tmp_path_factory):
    from diffpolicy.collect import collect

    path = tmp_path_factory.mktemp("cam") / "top.hdf5"
    collect(ENV, 6, str(path), progress=False, env_kwargs={"cameras": ["top"], "image_size": 32})
    return path


def train_run(out_dir, dataset, image_keys: list[str]):
    from diffpolicy.config import load_config
    from diffpolicy.train import train

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "cfg.yaml").write_text(
        f"base: {DEBUG}\ndata: {{obs_keys: [proprio], goal_key: null, image_keys: {image_keys}}}\n"
    )
    cfg = load_config(out_dir / "cfg.yaml", ("train.steps=5",))
    cfg.data.dataset = str(dataset)
    return train(cfg, out_dir / "run", progress=False)


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, camera_file):
    return train_run(tmp_path_factory.mktemp("imagerun"), camera_file, ["top_image"])


# ------------------------------------------------------------------------------------ info --plot


def test_info_plot_foreign_file_without_observation(tmp_path, capsys):
    write_foreign(tmp_path / "foreign.hdf5")
    out = info_plot(capsys, tmp_path / "foreign.hdf5", tmp_path / "f.png")
    assert "cameras:" not in out


def test_info_plot_foreign_file_with_modes_camera_and_one_action(tmp_path, capsys):
    write_foreign(tmp_path / "foreign.hdf5", modes=True, camera=True, action_dim=1)
    out = info_plot(capsys, tmp_path / "foreign.hdf5", tmp_path / "f.png")
    assert "cameras:     wrist_image 24x16" in out.splitlines()


def test_numbered_modes_get_palette_colours_not_grey_levels():
    # matplotlib reads "0" / "1" as black / white: numbered modes must not be taken as colours
    assert report._palette(["0", "1"]) == report.mode_colors(2)
    assert report._palette(["red", "blue"]) == ["red", "blue"]


def test_paths_only_with_layout_and_ee_position():
    demos = bimodal_demos(n=4)
    assert report.has_paths(demos)
    assert not report.has_paths(Demos(demos.episodes, mode_names=demos.mode_names))
    for e in demos.episodes:
        e.obs["observation"] = e.obs["observation"][:, :1]  # (T, 1): no (x, y) to draw
    assert not report.has_paths(demos)


def test_info_plot_camera_file(camera_file, tmp_path, capsys):
    out = info_plot(capsys, camera_file, tmp_path / "c.png")
    assert "cameras:     top_image 32x32" in out.splitlines()
    # the frame row makes the figure taller than the same plot without cameras
    demos = report_demos(camera_file)
    for e in demos.episodes:
        del e.obs["top_image"]
    report.plot_demos(tmp_path / "plain.png", demos)
    assert png_size(tmp_path / "c.png")[1] > png_size(tmp_path / "plain.png")[1] + 100


def report_demos(path):
    from diffpolicy.dataset import load_demos

    return load_demos(path)


# ---------------------------------------------------------------------------- camera overlay


def test_camera_chunks_land_in_the_frame(image_run, tmp_path):
    from diffpolicy.checkpoint import load_policy

    policy, cfg = load_policy(image_run)
    views = report.camera_chunks(policy, cfg, seed=1000)
    again = report.camera_chunks(policy, cfg, seed=1000)
    other = report.camera_chunks(policy, cfg, seed=1001)
    assert [v["key"] for v in views] == ["top_image"]
    px, frame = views[0]["pixels"], views[0]["frame"]
    To, Tp = cfg.data.n_obs_steps, cfg.data.horizon
    assert frame.shape == (32, 32, 3) and frame.dtype == np.uint8
    assert px.shape == (8, Tp - To + 1, 2)
    assert np.isfinite(px).all()
    inside = (px >= 0).all(-1) & (px <= 32).all(-1)
    assert inside.mean() > 0.9, px
    assert np.ptp(px, axis=0).max() > 0.5  # eight samples, not one chunk drawn eight times
    np.testing.assert_array_equal(px, again[0]["pixels"])  # seeded
    assert not np.array_equal(frame, other[0]["frame"])  # another episode start
    report.plot_camera_chunks(tmp_path / "cam.png", views + other)
    assert png_size(tmp_path / "cam.png")[0] > 500


def test_eval_report_camera_png_only_for_image_runs(image_run, camera_file, tmp_path):
    from diffpolicy.evaluate import evaluate_run

    state_run = train_run(tmp_path / "state", camera_file, [])
    for run, name, expected in ((image_run, "img", True), (state_run, "state", False)):
        rep = tmp_path / name
        evaluate_run(run, episodes=2, n_envs=2, report_dir=rep, progress=False)
        html = (rep / "index.html").read_text()
        assert (rep / "paths.png").is_file()
        assert (rep / "camera.png").is_file() == expected, name
        assert ('src="camera.png"' in html) == expected, name
