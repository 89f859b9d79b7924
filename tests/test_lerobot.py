"""LeRobotDataset v3: export, import, the round trip, a dataset written by lerobot itself, and bad
input (one line, exit 2, nothing written at the output path).

tests/data/lerobot_v3 was written by lerobot 0.4.4's own API (LeRobotDataset.create, add_frame,
save_episode, finalize) with benchmarks/lerobot_side.py; lerobot_v3_given.npz holds what that
script handed it. lerobot itself pins an older torch and is not installed here.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import camera_demos, debug_cfg, one_line_exit_2

from diffpolicy import lerobot
from diffpolicy.dataset import load_demos

FIXTURE = Path(__file__).parent / "data" / "lerobot_v3"
GIVEN = Path(__file__).parent / "data" / "lerobot_v3_given.npz"
MAX_PIXEL_ERROR = 6.0  # mean |error| per uint8 value after AV1 at crf 30, yuv420p, 32x32 frames


@pytest.fixture(scope="module")
def camera_file(tmp_path_factory):
    """4 ReachAround demos with a 32x32 front camera, modes and instructions."""
    return camera_demos(tmp_path_factory.mktemp("lerobot") / "demos.hdf5", 4, "front")


@pytest.fixture(scope="module")
def exported(camera_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "ds"
    lerobot.export_lerobot(camera_file, out)
    return out


def test_round_trip_keeps_every_array_and_attribute(camera_file, exported, tmp_path):
    back = tmp_path / "back.hdf5"
    lerobot.import_lerobot(exported, back)
    a, b = load_demos(camera_file), load_demos(back)
    assert any(e.paraphrases for e in a.episodes) and a.mode_names and a.layout
    diff = lerobot.differences(a, b)
    assert diff["different"] == [] and diff["pixel_error"] < MAX_PIXEL_ERROR, diff


def test_differences_names_what_changed(camera_file):
    a, b = load_demos(camera_file), load_demos(camera_file)
    b.episodes[1].actions[3, 0] += 1e-6
    b.episodes[2].paraphrases = []
    b.episodes[0].obs["front_image"][0] ^= 255
    diff = lerobot.differences(a, b)
    assert diff["different"] == ["demo_1/actions", "demo_2/paraphrases"]
    assert diff["pixel_error"] > 1


def test_export_is_a_v3_dataset_with_state_split_tasks_modes_and_stats(camera_file, exported):
    demos = load_demos(camera_file)
    info = json.loads((exported / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10  # the envs' control rate
    assert info["robot_type"] == "franka_panda"
    n = sum(len(e) for e in demos.episodes)
    assert (info["total_episodes"], info["total_frames"]) == (len(demos.episodes), n)
    f = info["features"]
    # proprioception only in observation.state; the goal is privileged
    assert all(
        name.split(".")[0] in ("observation", "proprio") for name in f["observation.state"]["names"]
    )
    assert {x.split(".")[0] for x in f["observation.environment_state"]["names"]} == {
        "achieved_goal", "desired_goal",
    }  # fmt: skip
    assert f["observation.images.front"]["dtype"] == "video"
    assert f["observation.images.front"]["shape"] == [32, 32, 3]
    assert f["mode"]["dtype"] == "int64" and f["action"]["shape"] == [2]

    data = pq.read_table(exported / lerobot.DATA_FILE).to_pydict()
    tasks = pq.read_table(exported / "meta/tasks.parquet").to_pydict()
    text = dict(zip(tasks["task_index"], tasks["task"]))
    rows = 0
    for i, ep in enumerate(demos.episodes):
        mine = [j for j, e in enumerate(data["episode_index"]) if e == i]
        assert [data["frame_index"][j] for j in mine] == list(range(len(ep)))
        assert {text[data["task_index"][j]] for j in mine} == {ep.instruction}
        assert {data["mode"][j] for j in mine} == {ep.mode}
        assert np.allclose([data["timestamp"][j] for j in mine], np.arange(len(ep)) / 10)
        rows += len(mine)
    assert rows == n and data["index"] == list(range(n))

    episodes = pq.read_table(exported / lerobot.EPISODES_FILE).to_pydict()
    key = "videos/observation.images.front"
    assert episodes["dataset_to_index"][-1] == n
    assert np.allclose(
        episodes[f"{key}/from_timestamp"], np.array(episodes["dataset_from_index"]) / 10
    )
    assert (exported / "videos/observation.images.front/chunk-000/file-000.mp4").stat().st_size > 0

    stats = json.loads((exported / "meta/stats.json").read_text())
    actions = np.concatenate([e.actions for e in demos.episodes])
    assert np.allclose(stats["action"]["mean"], actions.mean(0), atol=1e-6)
    assert np.allclose(stats["action"]["q99"], np.quantile(actions, 0.99, axis=0), atol=1e-6)
    assert stats["action"]["count"] == [n]
    image = stats["observation.images.front"]
    assert np.array(image["mean"]).shape == (3, 1, 1) and 0 < np.min(image["mean"]) < 1


def test_reads_a_dataset_written_by_lerobot_and_trains_on_it(tmp_path):
    from diffpolicy.train import train

    given = np.load(GIVEN)
    out = tmp_path / "imported.hdf5"
    lerobot.import_lerobot(FIXTURE, out)
    d = load_demos(out)
    assert [len(e) for e in d.episodes] == list(given["length"])
    assert sorted(d.episodes[0].obs) == ["cam_image", "state"]
    assert np.array_equal(np.concatenate([e.obs["state"] for e in d.episodes]), given["state"])
    assert np.array_equal(np.concatenate([e.actions for e in d.episodes]), given["action"])
    frames = np.concatenate([e.obs["cam_image"] for e in d.episodes])
    assert np.abs(frames.astype(int) - given["image"]).mean() < MAX_PIXEL_ERROR
    tasks = [str(t) for t in given["tasks"]]
    assert [e.instruction for e in d.episodes] == [tasks[m] for m in given["mode"]]
    assert d.env_args == {} and {e.mode for e in d.episodes} == {-1}

    cfg = debug_cfg(
        out, "data.obs_keys=[state]", "data.image_keys=[cam_image]", "data.goal_key=null",
        "train.steps=4", "train.val_every=2", "train.checkpoint_every=4",
    )  # fmt: skip
    run = train(cfg, tmp_path / "run", progress=False)
    assert (Path(run) / "config.yaml").is_file()


def test_a_v3_dataset_without_diffpolicy_metadata_gets_lerobot_names(exported, tmp_path):
    foreign = tmp_path / "foreign"
    shutil.copytree(exported, foreign)
    info_path = foreign / "meta/info.json"
    info = json.loads(info_path.read_text())
    info.pop("diffpolicy")
    info_path.write_text(json.dumps(info))
    table = pq.read_table(foreign / lerobot.EPISODES_FILE)
    pq.write_table(table.drop_columns(["diffpolicy/episode"]), foreign / lerobot.EPISODES_FILE)
    d = lerobot.read_lerobot(foreign)
    assert sorted(d.episodes[0].obs) == ["environment_state", "front_image", "state"]
    source = lerobot.read_lerobot(exported)
    for x, y in zip(d.episodes, source.episodes):
        assert x.instruction == y.instruction and x.mode == y.mode  # task and mode columns
        assert x.paraphrases == [] and x.seed == -1
        assert np.array_equal(
            x.obs["state"], np.concatenate([y.obs["observation"], y.obs["proprio"]], 1)
        )


# ------------------------------------------------------------------------------------ bad input


def _damaged(exported, tmp_path, damage) -> Path:
    bad = tmp_path / "bad"
    shutil.copytree(exported, bad)
    damage(bad)
    return bad


def _v21(d: Path):
    info = json.loads((d / "meta/info.json").read_text())
    (d / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v2.1"}))


BAD_DATASETS = {
    "no info.json": (lambda d: (d / "meta/info.json").unlink(), "not a LeRobotDataset"),
    "v2.1": (_v21, "convert_dataset_v21_to_v30"),
    "missing video": (
        lambda d: shutil.rmtree(d / "videos"), "missing video file",
    ),
    "broken parquet": (
        lambda d: (d / lerobot.DATA_FILE).write_bytes(b"PAR1 not really"), "cannot read",
    ),
    "info not json": (lambda d: (d / "meta/info.json").write_text("{"), "not valid JSON"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_DATASETS))
def test_a_bad_dataset_is_one_line_and_leaves_the_output_alone(case, exported, tmp_path, capsys):
    damage, message = BAD_DATASETS[case]
    bad = _damaged(exported, tmp_path, damage)
    out = tmp_path / "out.hdf5"
    out.write_bytes(b"the user's old file")
    one_line_exit_2(capsys, ["import", str(bad), "--out", str(out)], message)
    assert out.read_bytes() == b"the user's old file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "out.hdf5"]


def test_import_of_a_file_or_an_empty_directory_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    one_line_exit_2(capsys, ["import", str(tmp_path / "empty"), "--out", str(tmp_path / "o.hdf5")],
                    "not a LeRobotDataset")  # fmt: skip
    (tmp_path / "f.hdf5").write_bytes(b"x")
    one_line_exit_2(capsys, ["import", str(tmp_path / "f.hdf5"), "--out", str(tmp_path / "o.hdf5")],
                    "not a directory")  # fmt: skip
    assert not (tmp_path / "o.hdf5").exists()


def test_export_refuses_a_full_directory_and_a_broken_file(camera_file, tmp_path, capsys):
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    one_line_exit_2(capsys, ["export", str(camera_file), "--out", str(full)], "not empty")
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    broken = tmp_path / "broken.hdf5"
    broken.write_bytes(b"not hdf5")
    one_line_exit_2(capsys, ["export", str(broken), "--out", str(tmp_path / "ds")], "not an HDF5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.hdf5", "full"]


def test_a_failed_export_leaves_no_directory(camera_file, tmp_path, monkeypatch):
    def fail(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lerobot, "_encode_video", fail)
    with pytest.raises(OSError):
        lerobot.export_lerobot(camera_file, tmp_path / "ds")
    assert list(tmp_path.iterdir()) == []


def test_missing_packages_name_the_extra(camera_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "av", None)
    one_line_exit_2(capsys, ["export", str(camera_file), "--out", str(tmp_path / "ds")],
                    "pip install 'diffpolicy[lerobot]'")  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_image_features_stored_in_parquet_import_losslessly(camera_file, exported, tmp_path):
    """lerobot's `dtype: image` layout (PNG bytes in the data parquet, no video)."""
    import io

    import pyarrow as pa
    from PIL import Image

    demos = load_demos(camera_file)
    frames = np.concatenate([e.obs["front_image"] for e in demos.episodes])
    pngs = []
    for frame in frames:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="PNG")
        pngs.append({"bytes": buf.getvalue(), "path": None})
    images = tmp_path / "images"
    shutil.copytree(exported, images)
    shutil.rmtree(images / "videos")
    info = json.loads((images / "meta/info.json").read_text())
    info["features"]["observation.images.front"] = {
        "dtype": "image", "shape": [32, 32, 3], "names": ["height", "width", "channels"],
    }  # fmt: skip
    info["video_path"] = None
    (images / "meta/info.json").write_text(json.dumps(info))
    table = pq.read_table(images / lerobot.DATA_FILE)
    pq.write_table(table.append_column("observation.images.front", pa.array(pngs)),
                   images / lerobot.DATA_FILE)  # fmt: skip
    d = lerobot.read_lerobot(images)
    got = np.concatenate([e.obs["front_image"] for e in d.episodes])
    assert got.dtype == np.uint8 and np.array_equal(got, frames)  # PNG is lossless


def test_a_file_whose_env_cannot_be_made_exports_with_fps(toy_demo_file, tmp_path, capsys):
    """The toy file names an env id nobody registered: the fps must then be given."""
    out = tmp_path / "ds"
    one_line_exit_2(capsys, ["export", str(toy_demo_file), "--out", str(out)], "give --fps")
    assert not out.exists()
    lerobot.export_lerobot(toy_demo_file, out, fps=5)
    info = json.loads((out / "meta/info.json").read_text())
    assert info["fps"] == 5 and info["features"]["observation.state"]["shape"] == [4]
    assert (
        lerobot.differences(load_demos(toy_demo_file), lerobot.read_lerobot(out))["different"] == []
    )
