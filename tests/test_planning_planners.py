"""Planners (rank, CEM, random), proposals, goal costs and the worlds they imagine through
(pewm.planning; arXiv 2505.05495 §4.2 Table 2, §5.1 Fig. 6a).

Planner logic is tested on a toy grid world whose frames encode the agent's cell and heading, so
the true cost of every candidate is known; the worlds are tested on the simulator and the shipped
model (a few DDIM steps)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pewm.geometry import AgentState
from pewm.model.testing import torch_threads
from pewm.planning.costs import COSTS, LatentCost, PixelCost, SSIMDepthCost, log_depth_error, make_cost
from pewm.planning.planners import (
    Budget,
    CEMConfig,
    RankConfig,
    StopRule,
    cem,
    make_proposals,
    random_choice,
    rank,
    refit,
    sample_sequences,
    shift_probs,
    uniform_probs,
)
from pewm.planning.proposals import ActionPrior, fit_prior_from_dataset, uniform_proposals
from pewm.planning.worlds import Frame, Imagined, World, state_of_pose

# -- a toy world: a grid, 4 headings; frames are 8x8 images whose colour encodes (x, y, heading) --------

DIRS = ((1, 0), (0, 1), (-1, 0), (0, -1))


def toy_step(s, a):
    x, y, h = s
    if a == 0:
        return x + DIRS[h][0], y + DIRS[h][1], h
    return x, y, (h + (1 if a == 1 else -1)) % 4


def slide_step(s, a):
    """A world the per-step categorical of CEM suits: 0 = +x, 1 = +y, 2 = -y (heading fixed)."""
    x, y, h = s
    return (x + 1, y, h) if a == 0 else (x, y + (1 if a == 1 else -1), h)


def toy_frame(s):
    x, y, h = s
    rgb = np.empty((8, 8, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 100 + 10 * x, 100 + 10 * y, 40 * h
    pose = np.eye(4)
    pose[:2, 3] = x, y
    return rgb, np.full((8, 8), 1.0 + 0.1 * h, np.float32), pose


def toy_state(rgb):
    return int(rgb[0, 0, 0]) // 10 - 10, int(rgb[0, 0, 1]) // 10 - 10, int(rgb[0, 0, 2]) // 40


def toy_distance(s, g):
    dh = abs(s[2] - g[2]) % 4
    return abs(s[0] - g[0]) + abs(s[1] - g[1]) + 0.5 * min(dh, 4 - dh)


class ToyCost:
    name = "toy"

    def __call__(self, rgb, depth, goal_rgb, goal_depth):
        g = toy_state(goal_rgb)
        return np.array([toy_distance(toy_state(r), g) for r in rgb], dtype=np.float64)


class ToyWorld:
    name = "toy"

    def __init__(self, start=(0, 0, 0), step=toy_step):
        self.state, self.calls, self.step = start, 0, step

    @property
    def current(self):
        return Frame(*toy_frame(self.state))

    def imagine(self, actions):
        self.calls += 1
        frames = []
        for seq in np.asarray(actions):
            s, row = self.state, []
            for a in seq:
                s = self.step(s, int(a))
                row.append(toy_frame(s))
            frames.append(row)
        return Imagined(*(np.stack([[f[j] for f in row] for row in frames]) for j in range(3)))

    def observe(self, rgb, depth, poses):
        self.state = toy_state(np.asarray(rgb)[-1])


def end_state(start, seq, step=toy_step):
    s = start
    for a in seq:
        s = step(s, int(a))
    return s


def goal_of(state):
    rgb, depth, _ = toy_frame(state)
    return rgb, depth


# -- planners on the toy world --------------------------------------------------------------------------


def test_toy_world_is_a_world():
    assert isinstance(ToyWorld(), World)


def test_rank_picks_the_true_best_proposal_in_one_imagination_call():
    rng = np.random.default_rng(0)
    goal = (3, 2, 1)
    for _ in range(5):
        world = ToyWorld()
        props = uniform_proposals(rng, 16, 8)
        d = rank(world, ToyCost(), *goal_of(goal), props)
        truth = np.array([toy_distance(end_state((0, 0, 0), p), goal) for p in props])
        assert world.calls == 1 and d.imagined_count == 16 and d.method == "rank"
        assert d.best == int(np.argmin(truth)) and d.best_cost == truth.min()
        np.testing.assert_array_equal(d.costs, truth)
        np.testing.assert_array_equal(d.actions, props[d.best])
        assert d.imagined.rgb.shape == (1, 8, 8, 8, 3)
        assert toy_state(d.imagined.last_rgb[0]) == end_state((0, 0, 0), d.actions)
        assert d.candidate_poses.shape == (16, 8, 4, 4)
    d = rank(ToyWorld(), ToyCost(), *goal_of(goal), props, budget=Budget(max_candidates=5))
    assert d.candidates.shape == (5, 8) and d.imagined_count == 5


def test_cem_never_gets_worse_and_finds_what_random_ranking_misses():
    # (7, 1): seven +x and one +y, 8 of the 3**8 = 6561 sequences; uniform ranking with N = 60
    # finds one with probability ~7 %, CEM's per-step categorical homes in on them
    goal = (7, 1, 0)
    cfg = CEMConfig(n=60, horizon=8, iterations=5)
    cem_hits = rank_hits = 0
    for seed in range(8):
        world = ToyWorld(step=slide_step)
        d = cem(world, ToyCost(), *goal_of(goal), cfg, np.random.default_rng(seed))
        assert world.calls == d.iterations == 5 and d.imagined_count == 300 and len(d.costs) == 300
        assert all(b <= a for a, b in zip(d.history, d.history[1:]))
        assert d.best_cost == min(d.history) == d.costs.min()
        assert toy_distance(end_state((0, 0, 0), d.actions, slide_step), goal) == d.best_cost
        cem_hits += d.best_cost == 0.0
        props = uniform_proposals(np.random.default_rng(100 + seed), cfg.n, cfg.horizon)
        rank_hits += rank(ToyWorld(step=slide_step), ToyCost(), *goal_of(goal), props).best_cost == 0.0
    assert cem_hits >= 7 and rank_hits <= 1, (cem_hits, rank_hits)


def test_cem_is_deterministic_given_the_rng_and_respects_budgets():
    goal, cfg = (2, 3, 1), CEMConfig(n=20, horizon=6, iterations=3)
    a = cem(ToyWorld(), ToyCost(), *goal_of(goal), cfg, np.random.default_rng(3))
    b = cem(ToyWorld(), ToyCost(), *goal_of(goal), cfg, np.random.default_rng(3))
    np.testing.assert_array_equal(a.candidates, b.candidates)
    np.testing.assert_array_equal(a.actions, b.actions)
    capped_cfg = CEMConfig(n=20, horizon=6, iterations=3, budget=Budget(max_candidates=30))
    capped = cem(ToyWorld(), ToyCost(), *goal_of(goal), capped_cfg, np.random.default_rng(3))
    assert capped.imagined_count == 30 and capped.iterations == 2 and len(capped.costs) == 30
    timed_cfg = CEMConfig(n=20, horizon=6, iterations=50, budget=Budget(max_seconds=1e-9))
    timed = cem(ToyWorld(), ToyCost(), *goal_of(goal), timed_cfg, np.random.default_rng(3))
    assert timed.iterations == 1 and timed.imagined_count == 20  # at least one iteration, then stop


def test_cem_distributions_stay_valid():
    rng = np.random.default_rng(0)
    probs = uniform_probs(5)
    for _ in range(20):
        seqs = sample_sequences(rng, probs, 30)
        assert seqs.shape == (30, 5) and seqs.dtype == np.int64 and seqs.min() >= 0 and seqs.max() <= 2
        probs = refit(seqs[:3], probs, smoothing=0.2, min_prob=0.02)
        np.testing.assert_allclose(probs.sum(1), 1.0)
        assert probs.min() >= 0.02 - 1e-12
    # without a floor an action that no elite takes dies out; the rows still sum to 1
    p = refit(np.zeros((4, 3), np.int64), uniform_probs(3))
    np.testing.assert_allclose(p, [[1, 0, 0]] * 3)
    d = cem(ToyWorld(), ToyCost(), *goal_of((1, 1, 1)), CEMConfig(n=12, horizon=4, iterations=2), rng)
    assert d.probs.shape == (4, 3) and np.allclose(d.probs.sum(1), 1) and d.probs.min() >= 0.02 - 1e-12
    s = shift_probs(d.probs, 2)
    np.testing.assert_allclose(s[:2], d.probs[2:])
    np.testing.assert_allclose(s[2:], 1 / 3)
    with pytest.raises(ValueError, match="init_probs"):
        cem(ToyWorld(), ToyCost(), *goal_of((1, 1, 1)), CEMConfig(n=4, horizon=4), rng, init_probs=np.ones((4, 3)))


def test_random_choice_imagines_nothing():
    props = uniform_proposals(np.random.default_rng(0), 8, 4)
    d = random_choice(np.random.default_rng(1), props)
    e = random_choice(np.random.default_rng(1), props)
    assert d.best == e.best and d.imagined is None and d.imagined_count == 0
    np.testing.assert_array_equal(d.actions, props[d.best])


def test_stop_rule_and_configs():
    world = ToyWorld((2, 0, 0))
    assert StopRule(0.25).check(world, ToyCost(), *goal_of((2, 0, 0))) == (True, 0.0)
    assert StopRule(0.25).check(world, ToyCost(), *goal_of((3, 0, 0))) == (False, 1.0)
    stop, c = StopRule(None).check(world, ToyCost(), *goal_of((2, 0, 0)))
    assert stop is False and np.isnan(c)
    assert CEMConfig().num_elites == 18  # the top 30 % of 60
    for bad in (dict(n=0), dict(elite_frac=0.0), dict(min_prob=0.5), dict(smoothing=1.0)):
        with pytest.raises(ValueError, match="CEMConfig"):
            CEMConfig(**bad)
    with pytest.raises(ValueError, match="proposal"):
        RankConfig(proposal="policy")
    with pytest.raises(ValueError, match="ActionPrior"):
        make_proposals(RankConfig(proposal="prior"), np.random.default_rng(0))
    with pytest.raises(ValueError, match="proposals"):
        rank(ToyWorld(), ToyCost(), *goal_of((0, 0, 0)), np.array([[0, 3]]))


# -- proposals ---------------------------------------------------------------------------------------


def test_uniform_proposals():
    p = uniform_proposals(np.random.default_rng(0), 600, 8)
    assert p.shape == (600, 8) and p.dtype == np.int64
    assert np.all(np.abs(np.bincount(p.ravel(), minlength=3) / p.size - 1 / 3) < 0.03)
    with pytest.raises(ValueError, match="positive"):
        uniform_proposals(np.random.default_rng(0), 0, 8)


def test_action_prior_learns_mostly_forward_and_persistent_turns():
    rng = np.random.default_rng(0)
    walks = [np.array(([0] * 6 + [1] * 2 + [0] * 6 + [2] * 2) * 5) for _ in range(4)]
    prior = ActionPrior.fit(walks, order=2)
    s = prior.sample(rng, 400, 8)
    assert s.shape == (400, 8) and s.dtype == np.int64 and (s == 0).mean() > 0.6
    # turn persistence: after (left, left) the prior does not turn right
    assert prior.probs[1, 1, 2] < 0.2
    lp = prior.log_prob(np.array([[0] * 8, [0] * 6 + [1, 1], [1, 2] * 4]))
    assert lp[0] > lp[1] > lp[2]
    again = ActionPrior.from_dict(prior.to_dict())
    np.testing.assert_array_equal(again.counts, prior.counts)
    np.testing.assert_allclose(again.log_prob([[0, 1, 2]]), prior.log_prob([[0, 1, 2]]))
    h = prior.sample(np.random.default_rng(1), 200, 1, history=[0, 2])  # a turn just begun continues
    assert (h == 2).mean() > 0.5
    assert ActionPrior.fit(walks, order=0).sample(rng, 5, 3).shape == (5, 3)
    assert (make_proposals(RankConfig(n=7, horizon=3, proposal="prior"), rng, prior).shape) == (7, 3)
    with pytest.raises(ValueError, match="no actions"):
        ActionPrior.fit([np.zeros(0, np.int64)])
    with pytest.raises(ValueError, match="invalid action"):
        ActionPrior.fit([np.array([0, 5])])
    with pytest.raises(ValueError, match="shape"):
        ActionPrior(np.zeros((4, 3)), order=2)


def test_fit_prior_from_dataset(small_dataset):
    root, _ = small_dataset
    prior = fit_prior_from_dataset(root, split="train")
    assert prior.counts.sum() > 0 and prior.order == 2
    assert fit_prior_from_dataset(root, split="val", max_episodes=1).counts.sum() > 0
    with pytest.raises(ValueError, match="max_episodes"):
        fit_prior_from_dataset(root, max_episodes=0)


# -- goal costs ---------------------------------------------------------------------------------------


def _noisy(rgb, depth, sigmas, seed=0):
    rng = np.random.default_rng(seed)
    r = np.stack([np.clip(rgb + rng.normal(0, s, rgb.shape), 0, 255).astype(np.uint8) for s in sigmas])
    d = np.stack([depth * np.exp(rng.normal(0, s / 255, depth.shape)) for s in sigmas]).astype(np.float32)
    return r, d


def _scene(h=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(4, h // 8, h // 8, generator=g)
    up = torch.nn.functional.interpolate(low[None], size=(h, h), mode="bilinear", align_corners=False)[0]
    return (up[:3].permute(1, 2, 0).numpy() * 255).astype(np.uint8), (0.5 + 4 * up[3].numpy()).astype(np.float32)


@pytest.mark.parametrize("cost", [PixelCost(), SSIMDepthCost()], ids=lambda c: c.name)
def test_costs_identical_is_lowest_and_grow_with_noise(cost):
    rgb, depth = _scene()
    r, d = _noisy(rgb, depth, [0, 10, 30, 80])
    c = cost(r, d, rgb, depth)
    assert c.shape == (4,) and c.dtype == np.float64
    assert c[0] == pytest.approx(0.0, abs=1e-6) and np.all(np.diff(c) > 0), c
    assert cost(rgb, depth, rgb, depth).shape == (1,)  # one unbatched candidate


def test_latent_cost_with_the_shipped_model():
    from pewm.assets import load_model

    with torch_threads(1):
        model = load_model()
        rgb, depth = _scene(64)
        r, d = _noisy(rgb, depth, [0, 10, 40, 100])
        cost = make_cost("latent", model)
        assert isinstance(cost, LatentCost)
        c = cost(r, d, rgb, depth)
    assert c[0] == pytest.approx(0.0, abs=1e-8) and np.all(np.diff(c) > 0), c
    with pytest.raises(ValueError, match="64x64"):
        cost(*_noisy(*_scene(32), [0]), *_scene(32))


def test_cost_registry_and_errors():
    assert {"latent", "ssim-depth", "pixel", "dinov2"} <= set(COSTS)
    assert make_cost("pixel", depth_weight=0.0).depth_weight == 0.0
    with pytest.raises(ValueError, match="known"):
        make_cost("lpips")
    with pytest.raises(ValueError, match="model"):
        make_cost("latent")
    with pytest.raises(ValueError, match="weights"):
        make_cost("dinov2")
    rgb, depth = _scene()
    with pytest.raises(ValueError, match="goal_rgb"):
        PixelCost()(rgb[None], depth[None], rgb[:16], depth)
    with pytest.raises(ValueError, match="11x11"):
        SSIMDepthCost()(*goal_of((0, 0, 0)), *goal_of((0, 0, 0)))
    # invalid goal depth pixels are ignored; an invalid candidate depth counts as far off
    g = torch.tensor([[[2.0, 0.0]]])
    assert log_depth_error(torch.tensor([[[2.0, 7.0]]]), g).item() == 0.0
    assert log_depth_error(torch.tensor([[[0.0, 2.0]]]), g).item() > 3


def test_dinov2_cost_with_tiny_local_weights(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.Dinov2Config(hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=48, patch_size=14, image_size=56)
    transformers.Dinov2Model(cfg).save_pretrained(tmp_path)
    cost = make_cost("dinov2", weights=tmp_path, input_size=28)
    rgb, depth = _scene()
    r, d = _noisy(rgb, depth, [0, 120])
    c = cost(r, d, rgb, depth)
    assert c.shape == (2,) and c[0] == pytest.approx(0.0, abs=1e-5) and c[1] > c[0]


# -- the simulator as the world ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim():
    from pewm.sim import EmbodiedEnv, SimConfig
    from pewm.sim.house import HouseConfig

    env = EmbodiedEnv(SimConfig(resolution=64, house=HouseConfig(min_rooms=2, max_rooms=3)))
    env.reset(seed=3)
    yield env
    env.close()


def test_simulator_world_imagines_what_step_gives_without_moving_the_agent(sim):
    from pewm.planning.worlds import SimulatorWorld, execute

    start = sim.state
    world = SimulatorWorld(sim)
    world.reset(start)
    assert isinstance(world, World)
    acts = np.array([[0] * 12, [1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0], [2] * 12])
    im = world.imagine(acts)
    assert sim.state == start and world.state == start
    assert im.rgb.shape == (3, 12, 64, 64, 3) and im.depth.dtype == np.float32 and im.collided.shape == (3, 12)
    for i, seq in enumerate(acts):
        sim.teleport(start)
        for t, a in enumerate(seq):
            obs, _, _, _, info = sim.step(int(a))
            np.testing.assert_array_equal(im.rgb[i, t], obs["rgb"])
            np.testing.assert_array_equal(im.depth[i, t], obs["depth"])
            np.testing.assert_allclose(im.poses[i, t], obs["pose"])
            assert im.collided[i, t] == info["collided"]
    # real execution, then observe: imagination continues from the new state
    sim.teleport(start)
    ex = execute(sim, acts[1, :4])
    world.observe(ex.rgb, ex.depth, ex.poses)
    assert abs(world.state.x - ex.states[-1].x) < 1e-9 and abs(world.state.yaw - ex.states[-1].yaw) < 1e-9
    np.testing.assert_array_equal(world.current.rgb, ex.rgb[-1])
    s = state_of_pose(sim.pose_of(AgentState(1.0, 2.0, 0.5)))
    assert (s.x, s.y) == pytest.approx((1.0, 2.0)) and s.yaw == pytest.approx(0.5)
    # the planners run on it unchanged
    d = cem(world, PixelCost(), *goal_of_sim(sim, start), CEMConfig(n=6, horizon=3, iterations=2),
            np.random.default_rng(0))
    assert d.imagined_count == 12 and d.imagined.rgb.shape == (1, 3, 64, 64, 3)
    sim.teleport(start)


def goal_of_sim(env, state):
    obs = env.render_state(state)
    return obs["rgb"], obs["depth"]


# -- the world model as the world -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    from pewm.assets import load_model

    return load_model()


def _walk(env, n):
    rgb, depth, poses = [], [], []
    obs = env.render_state(env.state)
    for a in [0, 0, 1, 1, 0, 2][:n]:
        rgb.append(obs["rgb"]), depth.append(obs["depth"]), poses.append(obs["pose"])
        obs, *_ = env.step(a)
    return np.stack(rgb), np.stack(depth), np.stack(poses), obs


def test_model_world_imagines_all_candidates_in_one_generation(sim, model, monkeypatch):
    import pewm.planning.worlds as worlds
    from pewm.model import SamplingConfig

    calls = []
    real = worlds.generate_chunk
    def counting(*a, **kw):  # (batch size, fuse) of every generation
        calls.append((len(a[6]), kw["fuse"]))
        return real(*a, **kw)

    monkeypatch.setattr(worlds, "generate_chunk", counting)
    start = sim.state
    with torch_threads(1):
        prefix = _walk(sim, 6)
        world = worlds.ModelWorld(model, sim.intrinsics, SamplingConfig(steps=1), seed=0)
        obs = prefix[3]
        world.reset(*prefix[:3], obs["rgb"], obs["depth"], obs["pose"])
        assert isinstance(world, World)
        size, added = len(world.memory), world.memory.frames_added
        surface = len(world.memory.pmap.surface)
        assert size > 0 and added == 7 and surface > 0
        acts = uniform_proposals(np.random.default_rng(0), 4, 8)
        im = world.imagine(acts)
        assert im.rgb.shape == (4, 8, 64, 64, 3) and im.rgb.dtype == np.uint8 and im.depth.shape == (4, 8, 64, 64)
        assert im.poses.shape == (4, 8, 4, 4) and calls == [(4, False)]
        assert (len(world.memory), world.memory.frames_added, len(world.memory.pmap.surface)) == (
            size, added, surface)  # read-only
        # the same noise again after reset: same imagination
        world.reset(*prefix[:3], obs["rgb"], obs["depth"], obs["pose"])
        np.testing.assert_array_equal(world.imagine(acts).rgb, im.rgb)
        # max_batch bounds each generation; longer than a chunk fuses into per-candidate copies
        world.max_batch, calls[:] = 3, []
        world.imagine(acts)
        assert calls == [(3, False), (1, False)]
        world.max_batch, calls[:] = None, []
        long = world.imagine(np.zeros((2, 9), np.int64))
        assert long.rgb.shape == (2, 9, 64, 64, 3) and calls == [(2, True), (2, True)]
        assert (len(world.memory), world.memory.frames_added, len(world.memory.pmap.surface)) == (size, added, surface)
        # real frames: fused, and the current frame moves
        ex = worlds.execute(sim, [0, 0, 1])
        ex_rgb, ex_depth, ex_poses = ex.rgb, ex.depth, ex.poses
        world.observe(ex_rgb, ex_depth, ex_poses)
        assert world.memory.frames_added == added + 3 and len(world.memory) >= size
        np.testing.assert_array_equal(world.current.pose, ex_poses[-1])
        # the no-memory baseline: nothing is ever fused
        bare = worlds.ModelWorld(model, sim.intrinsics, SamplingConfig(steps=1), use_memory=False)
        bare.reset(*prefix[:3], obs["rgb"], obs["depth"], obs["pose"])
        bare.imagine(np.zeros((2, 9), np.int64))
        bare.observe(ex_rgb, ex_depth, ex_poses)
        assert len(bare.memory) == 0 and bare.memory.frames_added == 0
        d = rank(bare, LatentCost(model), obs["rgb"], obs["depth"], acts[:2])
        assert d.imagined.rgb.shape == (1, 8, 64, 64, 3)
    sim.teleport(start)
    with pytest.raises(ValueError, match="max_batch"):
        worlds.ModelWorld(model, sim.intrinsics, max_batch=0)
    with pytest.raises(RuntimeError, match="reset"):
        worlds.ModelWorld(model, sim.intrinsics).imagine(acts)
