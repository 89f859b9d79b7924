import re

import pytest

from diffpolicy.config import (
    Config,
    ConfigError,
    apply_override,
    config_from_dict,
    config_to_dict,
    load_config,
    replace_values,
    save_config,
)


def test_defaults_validate_and_roundtrip(tmp_path):
    cfg = config_from_dict({})
    assert cfg.data.horizon == 16 and cfg.model.down_dims == (64, 128, 256)
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert config_to_dict(again) == config_to_dict(cfg)


def test_unknown_key_names_closest():
    with pytest.raises(
        ConfigError, match=r"unknown config key 'train.lrr' \(did you mean 'train.lr'\?\)"
    ):
        config_from_dict({"train": {"lrr": 1e-3}})
    with pytest.raises(ConfigError, match="unknown config key 'modle'.*'model'"):
        config_from_dict({"modle": {}})


@pytest.mark.parametrize(
    "data, message",
    [
        ({"data": {"horizon": 15}}, "data.horizon=15 must be a positive multiple of 4"),
        (
            {"control": {"n_action_steps": 16}},
            "control.n_action_steps=16 must be <= data.horizon - data.n_obs_steps",
        ),
        ({"train": {"lr": "fast"}}, "train.lr='fast' must be a number"),
        ({"train": {"steps": 1.5}}, "train.steps=1.5 must be an integer"),
        ({"train": {"steps": True}}, "must be an integer"),
        ({"policy": {"type": "vae"}}, "policy.type='vae' must be one of diffusion, mse, gmm"),
        ({"train": {"precision": "fp16"}}, "train.precision='fp16' must be one of fp32, bf16"),
        ({"model": {"down_dims": [60, 128]}}, "multiple of model.n_groups=8"),
        ({"model": {"kernel_size": 4}}, "kernel_size=4 must be a positive odd number"),
        ({"policy": {"num_inference_steps": 500}}, "num_inference_steps=500"),
        ({"train": {"betas": [0.9]}}, "must have 2 entries"),
        ({"data": "oops"}, "data must be a mapping"),
    ],
)
def test_invalid_values_name_the_constraint(data, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config_from_dict(data)


def test_overrides_parse_yaml_values():
    data = {}
    apply_override(data, "train.lr=3e-4")
    apply_override(data, "model.down_dims=[32,64]")
    apply_override(data, "data.goal_key=null")
    cfg = config_from_dict(data)
    assert cfg.train.lr == 3e-4 and cfg.model.down_dims == (32, 64) and cfg.data.goal_key is None
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_override({}, "train.lr")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(bad)


def test_shipped_configs_load():
    from pathlib import Path

    for path in sorted(Path(__file__).parents[1].joinpath("configs").glob("*.yaml")):
        cfg = load_config(path)
        assert isinstance(cfg, Config), path


def test_keys_moved_to_control_still_load():
    """A run directory written before `control` existed keeps its Ta and ensembling weight."""
    cfg = config_from_dict({"data": {"n_action_steps": 3}, "eval": {"temporal_ensemble": 0.2}})
    assert cfg.control.n_action_steps == 3 and cfg.control.temporal_ensemble == 0.2
    assert "n_action_steps" not in config_to_dict(cfg)["data"]


def test_base_files_merge_and_cycles_are_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("train: {steps: 7, lr: 0.5}\nmodel: {down_dims: [8, 16]}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\ntrain: {steps: 9}\n")
    cfg = load_config(tmp_path / "b.yaml")
    assert (cfg.train.steps, cfg.train.lr, cfg.model.down_dims) == (9, 0.5, (8, 16))
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_config(tmp_path / "b.yaml")
    (tmp_path / "c.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "c.yaml")


def test_replace_values_validates_at_the_one_site():
    cfg = config_from_dict({})
    out = replace_values(cfg, {"policy.num_inference_steps": 4, "policy.sampler": None})
    assert out.policy.num_inference_steps == 4 and out.policy.sampler == cfg.policy.sampler
    assert cfg.policy.num_inference_steps == 10  # the original is not mutated
    with pytest.raises(ConfigError, match="policy.num_inference_steps=999 must be in"):
        replace_values(cfg, {"policy.num_inference_steps": 999})


LOWPASS_CASES = [
    (
        {"policy.lowpass": 17, "data.horizon": 16},
        "policy.lowpass=17 must be in [0, data.horizon=16]",
    ),
    ({"policy.lowpass": -1}, "policy.lowpass=-1 must be in"),
    ({"policy.lowpass": 4, "policy.type": "mse"}, "needs a diffusion policy"),
]


@pytest.mark.parametrize("values,message", LOWPASS_CASES)
def test_lowpass_is_checked(values, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        replace_values(config_from_dict({}), values)
