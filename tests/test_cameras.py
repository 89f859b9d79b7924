"""Camera observations through the pipeline: envs -> collect -> windows -> train -> eval, and the
bad input that comes with them (tiny images, tiny encoders; seconds)."""

from __future__ import annotations

import json

import gymnasium
import h5py
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs
from diffpolicy.config import load_config
from diffpolicy.dataset import Demos, Episode, load_demos, make_windows
from diffpolicy.errors import UserError
from diffpolicy.train import take
from tests.helpers import ROOT, camera_demos, one_line_exit_2

CAMERAS = {"diffpolicy/ReachAround-v0": "top", "diffpolicy/ReachAroundMaze-v0": "top",
           "diffpolicy/Pick-v0": "front"}  # fmt: skip
TINY = {
    "data": {"obs_keys": ["proprio"], "goal_key": None, "image_keys": ["top_image"]},
    "model": {"vision_features": 8, "vision_keypoints": 4},
}


@pytest.mark.parametrize("env_id", sorted(CAMERAS))
def test_camera_frames_are_declared_uint8_deterministic_and_pass_check_env(env_id):
    cam = CAMERAS[env_id]
    env = gymnasium.make(env_id, cameras=(cam,), image_size=32)
    space = env.observation_space[f"{cam}_image"]
    assert space.shape == (32, 32, 3) and space.dtype == np.uint8
    a, _ = env.reset(seed=5)
    b, _ = env.reset(seed=5)
    c, _ = env.reset(seed=6)
    frame = a[f"{cam}_image"]
    assert frame.dtype == np.uint8 and frame.shape == (32, 32, 3)
    np.testing.assert_array_equal(frame, b[f"{cam}_image"])
    assert not np.array_equal(frame, c[f"{cam}_image"])  # another scene, another picture
    assert frame.std() > 5  # not a blank frame
    check_env(env.unwrapped, skip_render_check=True)
    env.close()
    plain = gymnasium.make(env_id)  # default: no camera keys, nothing rendered
    assert not [k for k in plain.observation_space.spaces if k.endswith("_image")]
    plain.close()


def test_the_goal_marker_is_where_the_camera_projection_says():
    env = gymnasium.make("diffpolicy/ReachAround-v0", cameras=("top",), image_size=64)
    obs, _ = env.reset(seed=3)
    u = env.unwrapped
    col, row = u.camera_pixels("top", [[*obs["desired_goal"], 0.0]])[0]
    patch = obs["top_image"][int(row) - 1 : int(row) + 2, int(col) - 1 : int(col) + 2]
    rgb = patch.reshape(-1, 3).astype(int).mean(0)
    assert rgb[1] > rgb[0] + 40 and rgb[1] > rgb[2] + 40, rgb  # the green disc
    env.close()


def test_unknown_camera_and_bad_size_are_one_line_errors():
    with pytest.raises(UserError, match="unknown camera.*this env has: top"):
        envs.make_env("diffpolicy/ReachAround-v0", cameras=("wrist",))
    with pytest.raises(UserError, match="image_size"):
        envs.make_env("diffpolicy/Pick-v0", cameras=("front",), image_size=4)


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*vision*.yaml")))
def test_vision_configs_select_no_privileged_key(path):
    cfg = load_config(path)
    env = envs.make_env(cfg.env_id, cameras=[k.removesuffix("_image") for k in cfg.data.image_keys])
    proprio = set(env.unwrapped.proprio_keys)
    assert cfg.data.image_keys, path
    assert set(cfg.data.obs_keys) <= proprio, (cfg.data.obs_keys, proprio)
    assert cfg.data.goal_key is None
    env.close()


@pytest.fixture(scope="module")
def camera_file(tmp_path_factory):
    return camera_demos(tmp_path_factory.mktemp("cam") / "top.hdf5", 8, "top")


def test_collect_writes_compressed_uint8_frames_and_the_env_kwargs(camera_file):
    with h5py.File(camera_file) as f:
        ds = f["data/demo_0/obs/top_image"]
        assert ds.dtype == np.uint8 and ds.shape[1:] == (32, 32, 3)
        assert ds.compression == "gzip" and ds.chunks == (1, 32, 32, 3)
        env_args = json.loads(f["data"].attrs["env_args"])
    assert env_args["env_kwargs"] == {"cameras": ["top"], "image_size": 32}
    demos = load_demos(camera_file)
    assert demos.episodes[0].obs["top_image"].dtype == np.uint8
    assert demos.episodes[0].obs["proprio"].dtype == np.float32


def test_windows_hold_each_frame_once_and_take_gathers_the_window():
    T, To = 7, 3
    frames = np.zeros((T, 4, 4, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(T)  # pixel (0, 0) holds the time step
    ep = Episode(obs={"proprio": np.zeros((T, 2), np.float32), "cam_image": frames},
                 actions=np.zeros((T, 2), np.float32), rewards=np.zeros(T, np.float32),
                 dones=np.zeros(T, bool))  # fmt: skip
    demos = Demos([ep, ep])
    w = make_windows(demos, np.arange(2), ("proprio",), None, To, 4, ("cam_image",))
    assert w["frames/cam_image"].shape == (2 * T, 4, 4, 3)  # once per step, not per window
    data = {k: torch.from_numpy(v) for k, v in w.items()}
    batch = take(data, torch.tensor([0, 5, T + 1]))
    got = batch["cam_image"][:, :, 0, 0, 0].numpy()
    np.testing.assert_array_equal(got, [[0, 0, 0], [3, 4, 5], [0, 0, 1]])  # padded backwards
    assert batch["cam_image"].dtype == torch.uint8 and "frames/cam_image" not in batch


def _tiny_config(tmp_path, **data):
    import yaml

    path = tmp_path / "tiny.yaml"
    cfg = {"base": str(ROOT / "configs" / "debug.yaml"), **TINY}
    cfg["data"] = {**cfg["data"], **data}
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture(scope="module")
def image_run(camera_file, tmp_path_factory):
    from diffpolicy.cli import main

    d = tmp_path_factory.mktemp("imgrun")
    cfg = _tiny_config(d)
    assert main(["train", cfg, "--dataset", str(camera_file), "--out", str(d / "run")]) == 0
    return d / "run"


def test_an_image_run_trains_records_its_env_and_evaluates(image_run, tmp_path):
    from diffpolicy.checkpoint import load_policy
    from diffpolicy.evaluate import evaluate_run

    policy, cfg = load_policy(image_run)
    assert cfg.env_kwargs == {"cameras": ["top"], "image_size": 32}
    assert cfg.dims["image_height"] == 32 and policy.image_encoder is not None
    result = evaluate_run(image_run, 2, n_envs=2, progress=False)
    assert result["episodes"] == 2 and not any(r.get("error") for r in result["records"])
    grey = evaluate_run(image_run, 2, n_envs=2, progress=False, constant_images=True)
    assert grey["episodes"] == 2


def test_the_image_changes_the_chunk(image_run):
    """The encoder is in the path: another frame, other actions (same noise)."""
    from diffpolicy.bench import random_obs
    from diffpolicy.checkpoint import load_policy

    policy, cfg = load_policy(image_run)
    obs = random_obs(cfg, 2)
    other = {**obs, "top_image": torch.zeros_like(obs["top_image"])}
    outs = []
    for o in (obs, other):
        g = torch.Generator().manual_seed(0)
        outs.append(policy.predict_action_chunk(o, generator=g))
    assert not torch.allclose(outs[0], outs[1])


def test_bad_camera_input_is_one_line_and_exit_2(camera_file, image_run, tmp_path, capsys):
    missing = _tiny_config(tmp_path, image_keys=["side_image"])
    out = str(tmp_path / "r")
    one_line_exit_2(capsys, ["train", missing, "--dataset", str(camera_file), "--out", out],
                    "side_image")  # fmt: skip
    not_image = _tiny_config(tmp_path, image_keys=["observation"])
    one_line_exit_2(capsys, ["train", not_image, "--dataset", str(camera_file), "--out", out],
                    "uint8 frames")  # fmt: skip
    assert not (tmp_path / "r" / "model.safetensors").exists()
    one_line_exit_2(capsys, ["collect", "diffpolicy/ReachAround-v0", "--episodes", "1",
                             "--cameras", "wrist", "--out", str(tmp_path / "x.hdf5")],
                    "unknown camera")  # fmt: skip
    assert not (tmp_path / "x.hdf5").exists()
    # a run evaluated in an env that renders another size than it was trained on
    cfg_path = image_run / "config.yaml"
    saved = cfg_path.read_text()
    try:
        cfg_path.write_text(saved.replace("image_size: 32", "image_size: 48"))
        one_line_exit_2(capsys, ["eval", str(image_run), "--episodes", "1"], "(32, 32, 3)")
    finally:
        cfg_path.write_text(saved)


def test_a_damaged_image_dataset_is_one_line(camera_file, tmp_path, capsys):
    broken = tmp_path / "broken.hdf5"
    broken.write_bytes(camera_file.read_bytes())
    with h5py.File(broken, "r") as f:
        ds = f["data/demo_0/obs/top_image"]
        offset = ds.id.get_chunk_info(2).byte_offset
    raw = bytearray(broken.read_bytes())
    raw[offset : offset + 64] = b"\xff" * 64  # corrupt one compressed frame
    broken.write_bytes(bytes(raw))
    one_line_exit_2(capsys, ["info", str(broken)], "top_image")


def test_an_image_run_distills_into_a_two_step_student(image_run, tmp_path):
    from diffpolicy.checkpoint import load_policy
    from diffpolicy.distill import distill

    student = distill(image_run, tmp_path / "student", ["train.steps=4"], progress=False)
    policy, cfg = load_policy(student)
    assert cfg.policy.num_inference_steps == 2 and cfg.data.image_keys == ("top_image",)
    teacher, _ = load_policy(image_run)
    enc = {k: v for k, v in policy.state_dict().items() if k.startswith("image_encoder.")}
    assert enc  # the student sees the camera through its own copy of the teacher's encoder
    ref = teacher.state_dict()
    assert any(not torch.equal(v, ref[k]) for k, v in enc.items())  # and trains it


def test_a_foreign_robomimic_image_file_trains(tmp_path):
    """A file written by another tool (h5py directly, robomimic key names, no compression)."""
    from diffpolicy.cli import main

    rng = np.random.default_rng(0)
    path = tmp_path / "foreign.hdf5"
    with h5py.File(path, "w") as f:
        f.create_group("data").attrs["env_args"] = json.dumps({"env_name": "Lift", "env_type": 1})
        for i in range(4):
            g = f.create_group(f"data/demo_{i}")
            g["actions"] = rng.normal(size=(10, 7)).astype(np.float32)
            g["obs/robot0_eef_pos"] = rng.normal(size=(10, 3))  # float64, as robomimic writes
            g["obs/agentview_image"] = rng.integers(0, 256, (10, 24, 24, 3), dtype=np.uint8)
    cfg = tmp_path / "foreign.yaml"
    cfg.write_text(
        f"base: {ROOT / 'configs' / 'debug.yaml'}\nenv_id: Lift\n"
        "data: {obs_keys: [robot0_eef_pos], goal_key: null, image_keys: [agentview_image]}\n"
        "model: {vision_features: 8, vision_keypoints: 4}\ntrain: {steps: 3}\n"
    )
    assert main(["train", str(cfg), "--dataset", str(path), "--out", str(tmp_path / "r")]) == 0
    from diffpolicy.checkpoint import load_run_config

    assert load_run_config(tmp_path / "r").dims["image_height"] == 24


@pytest.mark.parametrize("condition", ["mode", "language"])
def test_conditioning_and_guidance_work_with_images(condition):
    """Mode / language conditions and classifier-free guidance on top of a camera encoder."""
    from diffpolicy.bench import policy_from_config, random_obs
    from diffpolicy.config import Sampling

    dims = {"obs_dim": 4, "action_dim": 2, "goal_dim": 0, "num_modes": 2, "lang_dim": 8,
            "image_height": 16, "image_width": 16}  # fmt: skip
    overrides = ("data.obs_keys=[proprio]", "data.goal_key=null", "data.image_keys=[top_image]",
                 f"policy.condition={condition}", "policy.cond_dropout=0.2",
                 "policy.language_grounding=none",
                 "model.vision_features=8", "model.vision_keypoints=4")  # fmt: skip
    policy, cfg = policy_from_config(str(ROOT / "configs" / "debug.yaml"), overrides, dims)
    batch = random_obs(cfg, 4)
    batch["action"] = torch.randn(4, cfg.data.horizon, 2)
    if condition == "mode":
        batch["mode"] = torch.tensor([0, 1, 0, 1])
    else:
        batch["lang"] = torch.randn(4, 8)
    loss = policy.compute_loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert policy.image_encoder.trunks["top_image"][0].weight.grad.abs().sum() > 0
    policy.eval()
    outs = [
        policy.predict_action_chunk(
            batch, Sampling("ddim", 2, w), generator=torch.Generator().manual_seed(0)
        )
        for w in (0.0, 1.0, 2.0)
    ]
    assert all(o.shape == (4, cfg.data.horizon, 2) and torch.isfinite(o).all() for o in outs)
    assert not torch.allclose(outs[0], outs[2])  # guidance moves the chunk
