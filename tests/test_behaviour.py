"""The behaviour the project is about, end to end on the real ReachAround-v0 env at CPU-CI size:
expert demos (diffpolicy.collect) -> a tiny diffusion and a tiny mse policy with the same budget
(diffpolicy.train) -> rollouts (diffpolicy.evaluate.evaluate_run). Diffusion takes both routes
around the obstacle; regression averages them and drives into the obstacle between the routes.

The demos take both routes from the same start states (the expert with mode 0 and with mode 1 on
the same reset seeds), so the observation cannot tell which route a demo takes: regression can
only fit their average, while diffusion can sample either route.

Measured with 40 demos, 300 training steps and 40 evaluation episodes each, over demo seeds 0-2
x train seeds 0-2 (this test: demo seed 0, train seed 0; its values in brackets):
    diffusion  success 0.70-1.00 (0.925), collision 0.00-0.30 (0.025), interpolation
               0.00-0.125 (0.0), normalized entropy 0.918-0.999 (0.999), both routes in all 9,
               the rarer one at least 0.33 of successes (0.486)
    mse        success 0.00, collision 1.00, interpolation 1.00 in all 9
Re-planning every 4 steps instead of 8 lets feedback break the tie for mse (collision 0.10-0.675
over the same 9 runs), and epsilon prediction (400 steps, re-planning every 4) left diffusion
colliding in 0.57-0.67 of 30 episodes, hence control.n_action_steps=8 and
policy.prediction_type=sample. The module takes 18-23 s on the
2-core CPU (collect 1 s, diffusion train 6-7 s + eval 3-4 s, mse train 5-7 s + eval 1-2 s;
31 s with the machine's load average at 5.5).

The rollout numbers alone do not show that the sampling noise is what picks the route (start
states differ between episodes: diffusion sampled from x_T = 0 still passes the rollout tests),
so the last test samples many chunks from one start state.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import DEBUG

from diffpolicy.checkpoint import load_policy
from diffpolicy.collect import collect
from diffpolicy.config import load_config
from diffpolicy.dataset import load_demos, write_demos
from diffpolicy.errors import UserError
from diffpolicy.evaluate import evaluate_run
from diffpolicy.train import train
from envs import make_env

ENV = "diffpolicy/ReachAround-v0"
PAIRS = 20  # demos per route, on the same 20 start states
STEPS = 300
EPISODES = 40
BUDGET = [
    "data.horizon=16",
    "data.val_fraction=0.0",
    "control.n_action_steps=8",
    "policy.prediction_type=sample",
    f"train.steps={STEPS}",
    "train.lr=2.0e-3",
    "train.warmup_steps=20",
    f"train.checkpoint_every={STEPS}",
    f"train.val_every={STEPS}",
    "train.log_every=50",
]


@pytest.fixture(scope="module")
def evals(tmp_path_factory):
    """{"diffusion" / "mse": eval JSON, "diffusion_run" / "mse_run": run directory, "demos":
    Demos}: trained and rolled out once for the module."""
    d = tmp_path_factory.mktemp("behaviour")
    routes = []
    for mode in (0, 1):
        part = d / f"route{mode}.hdf5"
        collect(ENV, PAIRS, str(part), seed=0, mode=mode, progress=False)
        routes.append(load_demos(part))
    demos = routes[0]
    demos.episodes = [e for pair in zip(routes[0].episodes, routes[1].episodes) for e in pair]
    write_demos(d / "demos.hdf5", demos)
    out = {"demos": demos}
    for kind in ("diffusion", "mse"):
        cfg = load_config(DEBUG, [f"policy.type={kind}", *BUDGET])
        cfg.data.dataset = str(d / "demos.hdf5")
        run = train(cfg, d / kind, progress=False)
        out[kind] = evaluate_run(run, EPISODES, n_envs=8, progress=False)
        out[f"{kind}_run"] = run
    return out


def test_demos_take_both_routes_from_the_same_starts(evals):
    demos = evals["demos"]
    assert demos.mode_counts().tolist() == [PAIRS, PAIRS]
    for left, right in zip(demos.episodes[::2], demos.episodes[1::2]):
        assert (left.mode, right.mode) == (0, 1) and left.seed == right.seed
        np.testing.assert_array_equal(left.obs["observation"][0], right.obs["observation"][0])


def test_diffusion_takes_both_routes(evals):
    r = evals["diffusion"]
    assert r["episodes"] == EPISODES and r["policy_type"] == "diffusion"
    assert r["modes_covered"] == 2, r["mode_probs"]  # both routes among the successes
    assert min(r["mode_probs"]) > 0.25, r["mode_probs"]
    assert r["normalized_entropy"] > 0.8, r["normalized_entropy"]
    assert r["success_rate"] > 0.6, r["success_rate"]
    assert r["interpolation_rate"] < 0.25, r["interpolation_rate"]


def test_regression_averages_the_routes_into_the_obstacle(evals):
    diffusion, mse = evals["diffusion"], evals["mse"]
    assert mse["episodes"] == EPISODES and mse["policy_type"] == "mse"
    # between the routes: ends at the obstacle's start-facing side, far more than diffusion
    assert mse["interpolation_rate"] > 0.6, mse["interpolation_rate"]
    assert mse["interpolation_rate"] > diffusion["interpolation_rate"] + 0.5
    assert mse["collision_rate"] > diffusion["collision_rate"] + 0.5
    assert mse["success_rate"] < 0.3, mse["success_rate"]


def first_chunk_offsets(run, starts=range(1000, 1008), n=64) -> np.ndarray:
    """(len(starts), n) signed largest sideways offset (x) of n first chunks from each start
    state (the evaluation's first 8 starts), relative to the start: < 0 left, > 0 right."""
    policy, _ = load_policy(run)
    env = make_env(ENV)
    rows = []
    for seed in starts:
        o, _ = env.reset(seed=seed)
        obs = {
            "obs": torch.from_numpy(np.stack([o["observation"]] * 2))[None].expand(n, -1, -1),
            "goal": torch.from_numpy(o["desired_goal"])[None].expand(n, -1),
        }
        gen = torch.Generator().manual_seed(seed)
        off = policy.predict_action_chunk(obs, generator=gen)[:, :, 0] - float(o["observation"][0])
        rows.append(off.gather(1, off.abs().argmax(1, keepdim=True))[:, 0].numpy())
    env.close()
    return np.stack(rows)


def test_from_one_start_diffusion_samples_both_routes_regression_their_average(evals):
    """The same question without the rollout's feedback: sampled again and again from a single
    start state, diffusion's first chunk goes either way; regression's is the one average.
    Measured (8 starts x 64 chunks; train seeds 0 and 2, noise seeds 0 and the start's): the
    diffusion policy sends 0.38-0.78 of the chunks left and 0.14-0.61 right from each start
    (this test: left 0.44-0.78, right 0.20-0.55), median |offset| 0.06-0.08 (this test: 0.075);
    mse: |offset| at most 0.02 from every start (this test: 0.0198), the same for every noise."""
    diffusion = first_chunk_offsets(evals["diffusion_run"])
    left, right = (diffusion < -0.05).mean(1), (diffusion > 0.05).mean(1)  # (8,) shares
    assert left.min() > 0.08 and right.min() > 0.08, (left, right)
    assert np.median(np.abs(diffusion)) > 0.05  # committed to a route, not between them
    mse = first_chunk_offsets(evals["mse_run"])
    assert np.abs(mse).max() < 0.035, np.abs(mse).max()


def test_temporal_ensembling_is_an_evaluation_setting(evals):
    """eval's temporal_ensemble re-plans every step and blends chunks: no chunk boundaries."""
    r = evaluate_run(evals["diffusion_run"], 2, n_envs=2, temporal_ensemble=0.01, progress=False)
    assert r["temporal_ensemble"] == 0.01 and evals["diffusion"]["temporal_ensemble"] == 0.0
    assert r["boundary_jump_ratio"] is None, r["boundary_jump_ratio"]
    assert r["mean_batch_size"] >= 1 and r["episodes"] == 2
    with pytest.raises(UserError, match="temporal_ensemble"):
        evaluate_run(evals["diffusion_run"], 2, temporal_ensemble=0.01, rtc=True, progress=False)
