"""The shipped configs/*.yaml: they load, variants inherit from their task's config and state
only what makes them a variant, and no file uses a key that moved to another section."""

from pathlib import Path

import pytest
import yaml

from diffpolicy.config import MOVED, config_to_dict, load_config, read_yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FILES = sorted(CONFIGS.glob("*.yaml"))
VARIANTS = [p for p in FILES if p.stem.endswith(("_mode", "_lang"))]


def raw(path: Path) -> dict:
    """The file's own mapping, without following `base:`."""
    return yaml.safe_load(path.read_text()) or {}


def flat(d: dict, prefix: str = "") -> dict:
    """{"section.key": value}; lists stay leaves."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resolved(path: Path) -> dict:
    return flat(config_to_dict(load_config(path)))


def test_there_are_configs_and_variants():
    assert len(FILES) >= 3 and VARIANTS


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_config_loads_and_validates(path):
    cfg = load_config(path)  # load_config validates
    assert cfg.dims == {}, "a YAML file leaves dims to the dataset"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_moved_keys(path):
    data = raw(path)
    for (old_s, old_k), (new_s, new_k) in MOVED.items():
        assert old_k not in (data.get(old_s) or {}), f"{path.name}: use {new_s}.{new_k}"


@pytest.mark.parametrize("path", VARIANTS, ids=lambda p: p.name)
def test_variant_base_chain_resolves(path):
    task = path.stem.rsplit("_", 1)[0]
    assert raw(path).get("base") == f"{task}.yaml", f"{path.name} must say base: {task}.yaml"
    seen, here = [], path
    while (base := raw(here).get("base")) is not None:
        here = (here.parent / base).resolve()
        assert here.is_file(), f"{path.name}: base {base} not found"
        assert here not in seen, f"{path.name}: circular base chain"
        seen.append(here)
        load_config(here)
    assert read_yaml(path)  # the whole chain merges


@pytest.mark.parametrize("path", VARIANTS, ids=lambda p: p.name)
def test_variant_differs_from_base_only_where_it_says(path):
    stated = flat({k: v for k, v in raw(path).items() if k != "base"})
    mine, base = resolved(path), resolved(path.parent / raw(path)["base"])
    differs = {k for k in mine if mine[k] != base[k]}
    assert differs <= stated.keys(), (
        f"{path.name} differs from its base in {differs - stated.keys()}"
    )
    same = stated.keys() - differs
    assert not same, f"{path.name} restates its base's values for {sorted(same)}"
    condition = {"mode": "mode", "lang": "language"}[path.stem.rsplit("_", 1)[1]]
    assert mine["policy.condition"] == condition


@pytest.mark.parametrize("name", ["debug.yaml", "published_lowdim.yaml"])
def test_reference_configs_stand_alone(name):
    assert "base" not in raw(CONFIGS / name), f"{name} must not follow another config's changes"


def test_published_lowdim_keeps_published_values():
    """Chi et al. 2023, low-dim UNet; partly inherited from the dataclass defaults."""
    c = resolved(CONFIGS / "published_lowdim.yaml")
    published = {
        "data.n_obs_steps": 2,
        "data.horizon": 16,
        "control.n_action_steps": 8,
        "model.down_dims": [256, 512, 1024],
        "model.kernel_size": 5,
        "model.n_groups": 8,
        "model.step_embed_dim": 256,
        "policy.type": "diffusion",
        "policy.num_train_timesteps": 100,
        "policy.beta_schedule": "squaredcos_cap_v2",
        "policy.prediction_type": "epsilon",
        "policy.sampler": "ddpm",
        "policy.num_inference_steps": 100,
        "policy.condition": "none",
        "train.steps": 100000,
        "train.batch_size": 256,
        "train.lr": 1e-4,
        "train.betas": [0.95, 0.999],
        "train.weight_decay": 1e-6,
        "train.warmup_steps": 500,
    }
    assert {k: c[k] for k in published} == published
