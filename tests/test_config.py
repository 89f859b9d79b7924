import pytest

from diffpolicy.config import (
    Config,
    ConfigError,
    apply_override,
    config_from_dict,
    config_to_dict,
    load_config,
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
        ({"data": {"n_action_steps": 16}}, "n_action_steps=16 must be <= horizon - n_obs_steps"),
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
