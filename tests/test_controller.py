"""Receding-horizon controller (diffpolicy.controller): which slice of a chunk is executed,
re-planning, batching of re-plans, temporal ensembling."""

import numpy as np
import pytest
from helpers import ScriptedPolicy, tiny_cfg

from diffpolicy.config import replace_values
from diffpolicy.controller import RecedingHorizonController


def fake_obs(x):
    return {"observation": np.full(4, x, np.float32), "desired_goal": np.zeros(2, np.float32)}


def test_controller_executes_the_published_slice_and_replans_every_ta_steps():
    cfg = tiny_cfg()
    policy = ScriptedPolicy(8)
    ctrl = RecedingHorizonController(policy, cfg, n_slots=2)
    ctrl.reset(0)
    ctrl.reset(1)
    actions = [ctrl.act({0: fake_obs(t), 1: fake_obs(-t)}) for t in range(9)]
    # To=2, Ta=4: steps 0-3 execute pred[To-1 : To-1+Ta] = indices 1..4 of call 0
    assert [a[0][1] for a in actions[:4]] == [1, 2, 3, 4]
    assert [a[0][0] for a in actions] == [0] * 4 + [1] * 4 + [2]
    assert policy.calls == 3  # one batched call per re-plan for both slots
    assert policy.seen[0]["obs"].shape == (2, 2, 4)
    # history: first frame padded backwards, then the last To observations
    assert policy.seen[0]["obs"][0, :, 0].tolist() == [0, 0]
    assert policy.seen[1]["obs"][0, :, 0].tolist() == [3, 4]
    assert len(ctrl.latencies_ms) == 3 and ctrl.batch_sizes == [2, 2, 2]


def test_replans_are_padded_to_a_power_of_two_batch():
    cfg = tiny_cfg()
    policy = ScriptedPolicy(8)
    ctrl = RecedingHorizonController(policy, cfg, n_slots=5)
    for s in range(5):
        ctrl.reset(s)
    out = ctrl.act({s: fake_obs(10 * s) for s in (0, 2, 4)})
    assert policy.seen[0]["obs"].shape[0] == 4  # 3 slots -> one call of batch 4
    assert policy.seen[0]["obs"][3, -1, 0] == 0  # the pad repeats the first slot
    assert sorted(out) == [0, 2, 4] and ctrl.batch_sizes == [3]
    ctrl.act({s: fake_obs(s) for s in range(5)})  # the others need a chunk: 2 -> batch 2
    assert policy.seen[1]["obs"].shape[0] == 2


def test_temporal_ensembling_replans_every_step_and_averages():
    cfg = replace_values(tiny_cfg(), {"control.temporal_ensemble": 0.5})
    policy = ScriptedPolicy(8)
    ctrl = RecedingHorizonController(policy, cfg, n_slots=1)
    ctrl.reset(0)
    a0 = ctrl.act({0: fake_obs(0)})[0]
    a1 = ctrl.act({0: fake_obs(1)})[0]
    assert policy.calls == 2
    assert a0[1] == 1.0
    # step 1: chunk 0 proposes index 2, chunk 1 proposes index 1; weights 1 and e^-0.5
    w = np.exp(-0.5)
    assert a1[1] == pytest.approx((2 + w * 1) / (1 + w))


def test_inference_delay_executes_committed_actions_then_the_new_chunk_from_d():
    cfg = replace_values(tiny_cfg(), {"control.delay": 2})
    policy = ScriptedPolicy(8)
    ctrl = RecedingHorizonController(policy, cfg, n_slots=1)
    ctrl.reset(0)
    acts, bounds = [], []
    for t in range(10):
        acts.append(tuple(ctrl.act({0: fake_obs(t)})[0]))
        bounds.append(ctrl.boundary[0])
    # To=2, Ta=4, D=2: the first chunk (computed before the episode) runs indices 1..6; the
    # second is planned at t=4 (2 actions left) from that observation and runs from index 1+D
    assert acts[:6] == [(0, i) for i in range(1, 7)]
    assert acts[6:] == [(1, i) for i in range(3, 7)]
    assert policy.seen[1]["obs"][0, -1, 0] == 4  # planned from the observation of t = 4
    assert policy.calls == 3 and bounds == [False] * 6 + [True] + [False] * 3


def test_delay_and_rtc_are_validated():
    from diffpolicy.errors import ConfigError

    for values, message in (
        ({"control.delay": 5}, "control.delay=5 must be in [0, control.n_action_steps=4]"),
        ({"control.delay": 4}, "must be <= data.horizon - data.n_obs_steps + 1 = 7"),
        ({"control.rtc": True, "policy.type": "mse"}, "control.rtc=true needs a diffusion"),
        ({"control.delay": 1, "control.temporal_ensemble": 0.5}, "takes no control.delay"),
    ):
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("+", r"\+")):
            replace_values(tiny_cfg(), values)


def test_rtc_passes_the_previous_chunk_shifted_by_ta_as_the_inpainting_target():
    from diffpolicy.controller import rtc_weights

    cfg = replace_values(tiny_cfg(), {"control.delay": 2, "control.rtc": True})
    policy = ScriptedPolicy(8)
    ctrl = RecedingHorizonController(policy, cfg, n_slots=1)
    ctrl.reset(0)
    for t in range(5):
        ctrl.act({0: fake_obs(t)})
    first, second = policy.seen
    assert not first["prefix_weight"].any()  # nothing to join at the start of an episode
    # index j of the new chunk faces index j + Ta of the previous one (call 0: value (0, j + 4))
    np.testing.assert_array_equal(second["prefix_action"][0, :4, 1].numpy(), [4, 5, 6, 7])
    w = second["prefix_weight"][0].numpy()
    np.testing.assert_array_equal(w, rtc_weights(8, 2, 4, 2))
    # To - 1 + D = 3 entries fixed (the past step and the 2 committed), then decaying, then free
    assert w[:3].tolist() == [1, 1, 1] and 0 < w[3] < 1 and w[4:].tolist() == [0] * 4


def test_inpainting_fixes_the_weighted_entries_of_a_diffusion_sample():
    import torch

    from diffpolicy.config import Sampling
    from diffpolicy.policies import make_policy

    torch.manual_seed(0)
    cfg = tiny_cfg()
    policy = make_policy(cfg).eval()
    policy.normalizer.fit(
        {
            "obs": np.random.default_rng(0).normal(size=(50, 4)),
            "action": np.random.default_rng(1).normal(size=(50, 2)),
            "goal": np.random.default_rng(2).normal(size=(50, 2)),
        }
    )
    obs = {"obs": torch.zeros(3, 2, 4), "goal": torch.zeros(3, 2)}
    prefix = torch.full((3, 8, 2), 0.25)
    weight = torch.zeros(3, 8)
    weight[:, :3] = 1.0
    for sampling in (Sampling("ddim", 4), Sampling("dpmpp", 5), Sampling("ddpm", 6)):
        g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
        free = policy.predict_action_chunk(obs, sampling, generator=g())
        guided = policy.predict_action_chunk(
            {**obs, "prefix_action": prefix, "prefix_weight": weight}, sampling, generator=g()
        )
        torch.testing.assert_close(guided[:, :3], prefix[:, :3], atol=1e-5, rtol=0)
        assert not torch.allclose(free[:, :3], prefix[:, :3], atol=1e-3)
        # zero weights change nothing: the same chunk as without a prefix
        none = policy.predict_action_chunk(
            {**obs, "prefix_action": prefix, "prefix_weight": torch.zeros(3, 8)},
            sampling,
            generator=g(),
        )
        torch.testing.assert_close(none, free, atol=1e-6, rtol=0)


@pytest.mark.parametrize("grounding", ["classifier", "none"])
def test_language_runs_send_the_grounded_mode_or_the_embedding(grounding):
    """A classifier-grounded language run is conditioned on the grounded mode (batch["mode"],
    -1 when refused); without grounding the policy gets the sentence embedding."""
    cfg = replace_values(
        tiny_cfg(), {"policy.condition": "language", "policy.language_grounding": grounding}
    )
    cfg.dims["lang_dim"] = 3
    policy = ScriptedPolicy(8)
    ctrl = RecedingHorizonController(policy, cfg, n_slots=2)
    if grounding == "classifier":
        ctrl.reset(0, {"mode": 1})
        ctrl.reset(1, {"mode": -1, "refused": True})
    else:
        ctrl.reset(0, {"lang": np.ones(3, np.float32)})
        ctrl.reset(1)
    ctrl.act({0: fake_obs(0), 1: fake_obs(1)})
    seen = policy.seen[0]
    if grounding == "classifier":
        assert seen["mode"].tolist() == [1, -1] and "lang" not in seen
    else:
        assert "mode" not in seen and seen["lang"][0].tolist() == [1, 1, 1]
        assert np.isnan(seen["lang"][1].numpy()).all()
