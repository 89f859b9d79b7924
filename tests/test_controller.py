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
