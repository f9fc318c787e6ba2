"""Goal-reaching metrics, MPC episodes, the planning benchmark and ``pewm plan`` (pewm.planning;
arXiv 2505.05495 §4.2 Table 2, §5.1 Fig. 6a; issue #13).

Metrics on hand-made paths; episodes in the simulator with a planner that is told the answer
(it follows the free-space shortest path to the hidden goal pose), the blind random baseline and
the stop rule; the benchmark end to end with the shipped model at tiny settings (one task, one
seed, N = 2 / 3, one DDIM step, one decision per episode), its resume and refusal rules, a dataset
at another resolution than the model's; and the CLI (help, malformed invocations, a tiny run)."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pewm.geometry import Action, AgentState, wrap_angle
from pewm.model import SamplingConfig
from pewm.planning import (
    Blind,
    CEMConfig,
    Decision,
    PlanConfig,
    RankConfig,
    SimulatorWorld,
    StopRule,
    TaskConfig,
    load_task_frames,
    make_tasks,
    random_choice,
    rows_of,
    run_episode,
    run_plan_benchmark,
    uniform_proposals,
)
from pewm.planning.costs import PixelCost
from pewm.planning.episode import PANEL
from pewm.planning.metrics import (
    METRICS,
    ate,
    bootstrap_success,
    episode_metrics,
    path_length,
    resample_path,
    rpe,
    sim_score,
    spl,
    summarize,
)
from pewm.sim import EmbodiedEnv, SimConfig, generate_house
from pewm.sim.motion import move
from pewm.video import resize_nearest

# the module's dataset has 121-frame episodes, one per house and split
PREFIX = (60, 121)


# ------------------------------------------------------------------------------------- metrics
def test_path_length_and_resampling():
    L = [(0, 0), (3, 0), (3, 4)]
    assert path_length(L) == pytest.approx(7.0)
    assert path_length([(1, 1)]) == 0.0
    r = resample_path(L, 8)
    assert r.shape == (8, 2)
    np.testing.assert_allclose(r[0], (0, 0))
    np.testing.assert_allclose(r[-1], (3, 4))
    np.testing.assert_allclose(np.linalg.norm(np.diff(r, axis=0), axis=1), 1.0)  # evenly spaced (7 m / 7)
    np.testing.assert_allclose(resample_path([(2, 5)], 4), [(2, 5)] * 4)  # a point path repeats its point
    np.testing.assert_allclose(resample_path([(2, 5), (2, 5)], 3), [(2, 5)] * 3)
    with pytest.raises(ValueError, match="empty"):
        resample_path(np.zeros((0, 2)))


def test_ate_rpe_sim_spl_on_hand_made_paths():
    ref = np.array([(0.0, 0.0), (1.0, 0.0), (1.0, 2.0)])
    assert ate(ref, ref) == pytest.approx(0.0, abs=1e-12) and rpe(ref, ref) == pytest.approx(0.0, abs=1e-12)
    # the same path sampled differently (an extra point on a segment): the same resampled path
    assert ate([(0, 0), (0.5, 0), (1, 0), (1, 2)], ref) == pytest.approx(0.0, abs=1e-12)
    shifted = ref + np.array([0.0, 1.0])  # offset by 1 m: ATE 1, RPE 0 (insensitive to a constant offset)
    assert ate(shifted, ref) == pytest.approx(1.0) and rpe(shifted, ref) == pytest.approx(0.0, abs=1e-12)
    # a path going the other way strays: ATE > 0 and RPE > 0
    assert ate(ref[::-1], ref) > 0.5 and rpe(ref[::-1], ref) > 0.05
    assert sim_score(0, 0) == pytest.approx(100.0)
    assert sim_score(0, 180) == pytest.approx(0.0, abs=1e-9)
    assert sim_score(0, 90) == pytest.approx(50.0)
    assert sim_score(1, 0) == pytest.approx(100 * math.exp(-1)) and sim_score(1, 0) == pytest.approx(36.8, abs=0.05)
    assert sim_score(-1, 0) == pytest.approx(100.0)  # a negative distance is clipped
    assert spl(True, 2.0, 2.0) == 1.0 and spl(False, 2.0, 2.0) == 0.0
    assert spl(True, 2.0, 4.0) == pytest.approx(0.5)  # twice the shortest path
    assert spl(True, 2.0, 1.0) == 1.0  # never above 1 (discretised shortest path)
    m = episode_metrics([(0, 0), (1, 0), (1, 2), (1, 2)], ref, 0.2, 10.0, True, 3.0)
    assert m["success"] is True and m["spl"] == pytest.approx(1.0) and m["path_m"] == pytest.approx(3.0)
    assert m["ate_m"] == pytest.approx(0.0, abs=1e-12) and m["sim"] == pytest.approx(sim_score(0.2, 10.0))
    m = episode_metrics([(0, 0), (1, 0), (0, 0), (1, 0), (1, 2)], ref, 0.2, 10.0, True, 3.0)
    assert m["spl"] == pytest.approx(3.0 / 5.0)
    assert set(METRICS) - {"seconds_per_decision"} <= set(m)


def test_summarize_over_seeds():
    def ep(success, spl_, dist, secs):
        return {"success": success, "spl": spl_, "final_dist_m": dist, "ate_m": 0.1, "rpe_m": 0.01, "sim": 50.0,
                "seconds_per_decision": secs}

    per_seed = {0: [ep(True, 0.5, 0.2, 1.0), ep(False, 0.0, 2.0, 3.0)],
                1: [ep(True, 1.0, 0.4, 2.0), ep(True, 0.8, 0.0, 2.0)]}
    s = summarize(per_seed)
    assert s["success"]["per_seed"] == [50.0, 100.0]  # a rate in %
    assert s["success"]["mean"] == pytest.approx(75.0) and s["success"]["std"] == pytest.approx(25.0)
    assert s["spl"]["per_seed"] == pytest.approx([0.25, 0.9]) and s["spl"]["mean"] == pytest.approx(0.575)
    assert s["final_dist_m"]["mean"] == pytest.approx((1.1 + 0.2) / 2)
    assert s["final_dist_m"]["std"] == pytest.approx(0.45)
    assert s["seconds_per_decision"]["mean"] == pytest.approx(2.0) and s["seconds_per_decision"]["std"] == 0.0
    assert s["episodes_per_seed"] == [2, 2]
    assert set(METRICS) <= set(s)
    # a missing or non-finite value is left out; a metric nobody has is NaN, not an error
    s = summarize({0: [{"success": True, "spl": float("nan")}, {"success": False, "spl": 1.0}]},
                  ("success", "spl", "sim"))
    assert s["success"]["mean"] == 50.0 and s["spl"]["mean"] == 1.0 and math.isnan(s["sim"]["mean"])
    assert s["success"]["std"] == 0.0  # one seed


def test_bootstrap_success_interval():
    x = [1, 0, 1, 1, 0, 1, 0, 1, 1, 1]
    lo, hi = bootstrap_success(x)
    assert 0.0 <= lo <= 70.0 <= hi <= 100.0 and hi - lo > 10.0
    assert bootstrap_success(x) == (lo, hi)  # seeded
    assert bootstrap_success([True] * 5) == (100.0, 100.0)
    assert bootstrap_success([False] * 5) == (0.0, 0.0)
    assert all(math.isnan(v) for v in bootstrap_success([]))


# ------------------------------------------------------------------------------ the small dataset
@pytest.fixture(scope="module")
def plan_dataset(tmp_path_factory):
    """3 houses x 1 episode x 120 steps at 64x64 (train/val/test one house each; ~3 s)."""
    from pewm.sim.generate import GenerateConfig, generate_dataset

    out = tmp_path_factory.mktemp("plan") / "ds"
    generate_dataset(out, GenerateConfig(houses=3, episodes_per_house=1, steps=120, seed=7))
    return out


@pytest.fixture(scope="module")
def test_tasks(plan_dataset):
    return make_tasks(plan_dataset, "test", n=2, seed=0, config=TaskConfig(prefix_range=PREFIX))


@pytest.fixture(scope="module")
def house_env(plan_dataset, test_tasks):
    from pewm.data import open_dataset

    sim = SimConfig.from_dict(open_dataset(plan_dataset).spec.generator["sim"])
    env = EmbodiedEnv(sim)
    env.reset(seed=0, options={"house": generate_house(test_tasks[0].house_seed, sim.house)})
    yield env
    env.close()


# --------------------------------------------------------------------- a planner told the answer
def _path_action(s: AgentState, goal: AgentState, free, cfg, near_m: float = 0.3) -> int:
    """Greedy action along the free-space shortest path to ``goal`` (toward the free heading nearest
    to the path's direction: the path may hug a corner closer than a step allows); at the goal, turn
    toward its yaw."""
    turn = math.radians(cfg.turn_deg)
    if math.hypot(goal.x - s.x, goal.y - s.y) <= near_m:
        return int(Action.TURN_LEFT if wrap_angle(goal.yaw - s.yaw) > 0 else Action.TURN_RIGHT)  # turns only
    path = free.shortest_path(free.nearest_free(s.x, s.y), free.nearest_free(goal.x, goal.y)) or [(goal.x, goal.y)]
    wx, wy = next(((x, y) for x, y in path[1:] if math.hypot(x - s.x, y - s.y) > 0.15), (goal.x, goal.y))
    want = math.atan2(wy - s.y, wx - s.x)
    headings = sorted((s.yaw + k * turn for k in range(-12, 12)), key=lambda h: abs(wrap_angle(want - h)))
    for h in headings:
        if not move(AgentState(s.x, s.y, h), int(Action.FORWARD), free, cfg)[1]:
            break
    err = wrap_angle(h - s.yaw)
    if abs(err) < turn / 2:
        return int(Action.FORWARD)
    return int(Action.TURN_LEFT if err > 0 else Action.TURN_RIGHT)


def path_follower(env: EmbodiedEnv, goal_state, horizon: int = 8):
    """``decide(world, step)`` on a :class:`SimulatorWorld`: the actions of the shortest path toward the
    goal pose (which real planners never see), imagined once so the video shows them."""
    goal = AgentState(*goal_state)

    def decide(world, step):
        s, acts = world.state, []
        for _ in range(horizon):
            a = _path_action(s, goal, env.free_space, env.config.actions)
            s, _ = move(s, a, env.free_space, env.config.actions)
            acts.append(a)
        acts = np.asarray(acts, np.int64)
        im = world.imagine(acts[None])
        return Decision("told", acts, acts[None], np.zeros(1), 0, im, 0.0, 1, candidate_poses=im.poses)

    return decide


def _reset_oracle(env, task):
    world = SimulatorWorld(env)
    world.reset(AgentState(*task.start_state))
    return world


def test_the_oracle_with_a_planner_told_the_answer_succeeds(plan_dataset, test_tasks, house_env):
    cfg = TaskConfig(prefix_range=PREFIX, budget=48)
    for task in test_tasks:
        frames = load_task_frames(plan_dataset, task)
        world = _reset_oracle(house_env, task)
        np.testing.assert_array_equal(world.current.rgb, frames.start_rgb)  # the simulator renders the dataset
        res = run_episode(task, frames, house_env, world, path_follower(house_env, task.goal_state), PixelCost(),
                          config=cfg, execute_k=8, record=False)
        m = res.metrics
        assert m["success"], (task.task_id, m)
        assert m["final_dist_m"] <= cfg.success_dist_m and m["final_angle_deg"] <= cfg.success_deg
        assert 0.0 < m["spl"] <= 1.0 and m["sim"] > 50.0
        assert m["path_m"] >= 0.5 * task.path_length_m and m["ate_m"] < task.path_length_m
        assert res.steps == cfg.budget and not res.stopped and len(res.states) == cfg.budget + 1
        assert res.states[0] == pytest.approx(task.start_state)
        s = house_env.state
        assert (s.x, s.y, s.yaw) == pytest.approx(res.states[-1])  # executed in the real env
        assert res.imagined == [1] * 6 and len(res.decision_seconds) == 6
        d = res.to_dict()
        assert d["decisions"] == 6 and d["imagined_per_decision"] == 1.0 and d["task_id"] == task.task_id
        json.dumps(d)  # serialisable


class CountingBlind(Blind):
    def __init__(self, frame):
        super().__init__(frame)
        self.imagine_calls = 0

    def imagine(self, actions):
        self.imagine_calls += 1
        return super().imagine(actions)


def test_blind_random_runs_to_the_budget_without_imagining(plan_dataset, test_tasks, house_env):
    from pewm.planning import Frame

    task = test_tasks[0]
    frames = load_task_frames(plan_dataset, task)
    world = CountingBlind(Frame(frames.start_rgb, frames.start_depth, frames.start_pose))
    rng = np.random.default_rng(0)
    cfg = TaskConfig(prefix_range=PREFIX, budget=20)
    res = run_episode(task, frames, house_env, world, lambda w, step: random_choice(rng, uniform_proposals(rng, 4, 8)),
                      PixelCost(), StopRule(), cfg, execute_k=8)
    assert world.imagine_calls == 0
    assert res.steps == 20 and len(res.states) == 21 and not res.stopped
    assert len(res.decision_seconds) == 3 and res.imagined == [0, 0, 0]  # 8 + 8 + 4 actions
    np.testing.assert_array_equal(world.current.pose, house_env.render_state(house_env.state)["pose"])  # observed
    assert res.to_dict()["imagined_per_decision"] == 0.0


def test_stop_rule_stops_at_once_when_the_start_view_is_the_goal(plan_dataset, test_tasks, house_env):
    task = test_tasks[0]
    frames = load_task_frames(plan_dataset, task)
    at_goal = dataclasses.replace(task, goal_state=task.start_state)
    same = dataclasses.replace(frames, goal_rgb=frames.start_rgb.copy(), goal_depth=frames.start_depth.copy())

    def never(world, step):
        raise AssertionError("decide called although the start view is the goal")

    cfg = TaskConfig(prefix_range=PREFIX, budget=8)
    # the rendered start view vs the stored one: the same RGB, depth stored to the millimetre (cost ~2e-5)
    res = run_episode(at_goal, same, house_env, _reset_oracle(house_env, at_goal), never, PixelCost(),
                      StopRule(threshold=1e-3), cfg)
    assert res.stopped and res.steps == 0 and res.decision_seconds == [] and len(res.states) == 1
    assert res.metrics["success"] and res.metrics["final_dist_m"] == 0.0 and res.metrics["sim"] == pytest.approx(100.0)
    assert res.metrics["spl"] == pytest.approx(1.0)  # shortest path length (the task's) over max(0, it)
    # the real goal is not the start view: the same threshold does not stop, the budget ends the episode
    world = _reset_oracle(house_env, task)
    res = run_episode(task, frames, house_env, world, path_follower(house_env, task.goal_state), PixelCost(),
                      StopRule(threshold=1e-3), cfg)
    assert not res.stopped and res.steps == 8


def test_video_frames_have_four_panels(plan_dataset, test_tasks, house_env):
    task = test_tasks[0]
    frames = load_task_frames(plan_dataset, task)
    cfg = TaskConfig(prefix_range=PREFIX, budget=6)
    res = run_episode(task, frames, house_env, _reset_oracle(house_env, task),
                      path_follower(house_env, task.goal_state), PixelCost(), config=cfg, execute_k=3, record=True)
    gap = 4
    assert len(res.video) == 1 + 6
    for i, f in enumerate(res.video):
        assert f.shape == (PANEL, 4 * PANEL + 3 * gap, 3) and f.dtype == np.uint8
        panels = [f[:, k * (PANEL + gap):k * (PANEL + gap) + PANEL] for k in range(4)]
        for k in range(3):  # white gaps between the panels
            assert (f[:, k * (PANEL + gap) + PANEL:(k + 1) * (PANEL + gap)] == 255).all()
        body = slice(14, None)  # below the label strip
        np.testing.assert_array_equal(panels[0][body], resize_nearest(frames.goal_rgb, PANEL)[body])  # goal
        if i == 0:
            np.testing.assert_array_equal(panels[1][body], resize_nearest(frames.start_rgb, PANEL)[body])
            assert (panels[2][body] == 0).all()  # nothing imagined yet
        else:  # the oracle imagines perfectly: best imagined == real view
            np.testing.assert_array_equal(panels[2][body], panels[1][body])
            assert panels[1][body].std() > 0
        assert panels[3][body].std() > 0  # the map is drawn
    assert not np.array_equal(res.video[0][:, 3 * (PANEL + gap):], res.video[-1][:, 3 * (PANEL + gap):])  # path grows
    # without record: no frames
    res = run_episode(task, frames, house_env, _reset_oracle(house_env, task),
                      path_follower(house_env, task.goal_state), PixelCost(), config=cfg, execute_k=3)
    assert res.video == []


# ------------------------------------------------------------------------------- the benchmark
def tiny_config(data, out, **kw) -> PlanConfig:
    base = dict(data=str(data), out=str(out), tasks=1, seeds=1, rank=RankConfig(n=2), cem=CEMConfig(n=3, iterations=1),
                sampling=SamplingConfig(steps=1), execute=8, task_config=TaskConfig(prefix_range=PREFIX, budget=8))
    return PlanConfig(**{**base, **kw})


ROWS = ["rank/voxel-render", "rank/none", "cem/voxel-render", "cem/none", "rank/oracle", "cem/oracle",
        "rank/map-only", "cem/map-only", "random"]
SLUGS = [r.replace("/", "-") for r in ROWS]


@pytest.fixture(scope="module")
def bench(plan_dataset, tmp_path_factory):
    """One benchmark run at tiny settings (1 task x 1 seed x 9 rows, one decision each; ~20 s)."""
    out = tmp_path_factory.mktemp("bench") / "out"
    cfg = tiny_config(plan_dataset, out)
    messages = []
    summary = run_plan_benchmark(cfg, on_progress=lambda done, total, what: messages.append((done, total, what)))
    return cfg, summary, messages


def test_benchmark_writes_rows_episodes_and_videos(bench):
    cfg, summary, messages = bench
    out = Path(cfg.out)
    assert [r.name for r in rows_of(cfg)] == ROWS
    assert [m[:2] for m in messages] == [(i + 1, 9) for i in range(9)]
    assert not any("(done before)" in m[2] for m in messages)
    doc = json.loads((out / "results.json").read_text())
    assert list(doc["rows"]) == ROWS
    assert doc == json.loads(json.dumps(summary, default=float))
    assert doc["config"]["tasks"] == 1 and doc["config"]["rank"]["n"] == 2 and doc["config"]["cem"]["iterations"] == 1
    assert doc["config"]["task_config"]["prefix_range"] == list(PREFIX)
    assert "out" not in doc["config"] and len(doc["tasks"]) == 1
    task_id = doc["tasks"][0]["task_id"]
    for name, slug in zip(ROWS, SLUGS):
        r = doc["rows"][name]
        for k in ("success", "spl", "final_dist_m", "ate_m", "rpe_m", "sim", "seconds_per_decision"):
            assert set(r[k]) >= {"mean", "std", "per_seed"}, (name, k)
            assert math.isfinite(r[k]["mean"]) and r[k]["std"] == 0.0 and len(r[k]["per_seed"]) == 1, (name, k)
        assert r["episodes_per_seed"] == [1]
        assert 0.0 <= r["success"]["mean"] <= 100.0 and 0.0 <= r["spl"]["mean"] <= 1.0
        lo, hi = r["success_ci95_over_episodes"]
        assert lo <= r["success"]["mean"] <= hi
        assert sum(v["episodes"] for v in r["success_by_path_m"].values()) == 1
        assert sum(v["episodes"] for v in r["success_by_turn_deg"].values()) == 1
        ep = json.loads((out / "episodes" / slug / f"{task_id}_s0.json").read_text())
        assert ep["row"] == name and ep["seed"] == 0 and ep["task_id"] == task_id and ep["steps"] == 8
        assert ep["decisions"] == 1 and len(ep["states"]) == 9
        assert ep["final_dist_m"] == pytest.approx(r["final_dist_m"]["mean"])
        video = out / "videos" / task_id / f"{slug}.mp4"
        assert video.read_bytes()[4:8] == b"ftyp", video
    imagined = {name: json.loads((out / "episodes" / slug / f"{task_id}_s0.json").read_text())["imagined_per_decision"]
                for name, slug in zip(ROWS, SLUGS)}
    assert imagined == {"rank/voxel-render": 2, "rank/none": 2, "cem/voxel-render": 3, "cem/none": 3, "rank/oracle": 2,
                        "cem/oracle": 3, "rank/map-only": 2, "cem/map-only": 3, "random": 0}
    # the table prints every row
    from pewm.planning.report import plan_table

    table = plan_table(summary)
    assert all(f"| {name} |" in table for name in ROWS) and len(table.splitlines()) == 2 + len(ROWS)
    found = {line.split(" | ")[0][2:]: line.split(" | ")[-2] for line in table.splitlines()[2:]}
    assert found["cem/voxel-render"] == "100" and found["cem/none"] == "0" and found["random"] == "–"


def test_benchmark_map_cost_finds_the_goal_only_with_a_memory(bench):
    """The default ``map`` cost: rows with a memory (the model's map, the oracle's prefix map) register
    the goal image in it, near the hidden goal pose; the memory-less row has nothing to register
    against and scores every decision with the image cost; the random row has no cost at all."""
    cfg, summary, _ = bench
    assert cfg.cost == "map"
    task = summary["tasks"][0]
    for name, slug in zip(ROWS, SLUGS):
        ep = json.loads((Path(cfg.out) / "episodes" / slug / f"{task['task_id']}_s0.json").read_text())
        row = summary["rows"][name]
        if name == "random":
            assert "goal_found" not in ep and "goal_found_pct" not in row
        elif name.endswith("/none"):
            assert ep["goal_found"] is False and ep["image_cost_decisions"] == ep["decisions"] == 1, name
            assert row["goal_found_pct"] == 0.0 and row["goal_estimate_error_m_median"] is None
        else:
            assert ep["goal_found"] is True and ep["image_cost_decisions"] == 0, name
            assert ep["goal_estimate_error_m"] < 0.3 and ep["goal_estimate_error_deg"] < 10.0, name
            gx, gy, gyaw = ep["goal_estimate"]
            assert math.hypot(gx - task["goal_state"][0], gy - task["goal_state"][1]) == pytest.approx(
                ep["goal_estimate_error_m"])
            assert row["goal_found_pct"] == 100.0 and row["goal_estimate_error_m_median"] == pytest.approx(
                ep["goal_estimate_error_m"])


def test_benchmark_resumes_and_refuses(bench, tmp_path):
    cfg0, summary0, _ = bench
    out = tmp_path / "out"
    shutil.copytree(cfg0.out, out)
    cfg = dataclasses.replace(cfg0, out=str(out))
    task_id = summary0["tasks"][0]["task_id"]
    before = json.loads((out / "results.json").read_text())
    # an existing results.json is never replaced without --overwrite
    with pytest.raises(ValueError, match="--overwrite"):
        run_plan_benchmark(cfg)
    # an interrupted run: one episode and the summary missing; the same config recomputes only that episode
    gone = out / "episodes" / "rank-none" / f"{task_id}_s0.json"
    old = json.loads(gone.read_text())
    gone.unlink()
    (out / "results.json").unlink()
    messages = []
    summary = run_plan_benchmark(cfg, on_progress=lambda d, t, what: messages.append(what))
    assert len(messages) == 9 and sum("(done before)" in m for m in messages) == 8
    assert [m for m in messages if "(done before)" not in m] == [f"rank/none {task_id}"]
    after = json.loads((out / "results.json").read_text())
    assert after == json.loads(json.dumps(summary, default=float))
    for name in ROWS:
        if name != "rank/none":
            assert after["rows"][name] == before["rows"][name], name
    new = json.loads(gone.read_text())
    timing = ("seconds_per_decision",)
    assert {k: v for k, v in new.items() if k not in timing} == {k: v for k, v in old.items() if k not in timing}
    assert {k: v for k, v in after["rows"]["rank/none"].items() if k != "seconds_per_decision"} == {
        k: v for k, v in before["rows"]["rank/none"].items() if k != "seconds_per_decision"}  # deterministic
    # a changed setting in the same --out: refused, naming it and --overwrite (nothing touched)
    (out / "results.json").unlink()
    with pytest.raises(ValueError, match=r"execute.*--overwrite"):
        run_plan_benchmark(dataclasses.replace(cfg, execute=4))
    with pytest.raises(ValueError, match=r"rank.*--overwrite"):
        run_plan_benchmark(dataclasses.replace(cfg, rank=RankConfig(n=3)))
    assert gone.exists() and not (out / "results.json").exists()
    # --overwrite starts again: nothing of the earlier run is left
    small = dataclasses.replace(cfg, methods=(), baselines=("random",), overwrite=True)
    summary = run_plan_benchmark(small)
    assert list(summary["rows"]) == ["random"]
    assert sorted(p.name for p in (out / "episodes").iterdir()) == ["random"]
    assert sorted(p.name for p in (out / "videos" / task_id).iterdir()) == ["random.mp4"]


def test_benchmark_rejects_a_memory_the_model_does_not_read(plan_dataset, tmp_path):
    with pytest.raises(ValueError, match="bogus-reader"):
        run_plan_benchmark(tiny_config(plan_dataset, tmp_path / "o", memories=("voxel-render", "bogus-reader")))
    assert not (tmp_path / "o" / "plan_config.json").exists()


def test_benchmark_on_a_dataset_at_another_resolution(plan_dataset, tmp_path):
    """A 128 px dataset with the 64 px model: the task's frames are fitted to the model, as the
    simulator renders the executed ones (was: ValueError 'rgb has resolution 128x128')."""
    from pewm.assets import load_model
    from pewm.planning.benchmark import _fit_frames
    from pewm.sim.generate import GenerateConfig, generate_dataset

    big = tmp_path / "ds128"
    generate_dataset(big, GenerateConfig(houses=3, episodes_per_house=1, steps=120, seed=7, resolution=128))
    task = make_tasks(big, "test", n=1, seed=0, config=TaskConfig(prefix_range=PREFIX))[0]
    same = make_tasks(plan_dataset, "test", n=1, seed=0, config=TaskConfig(prefix_range=PREFIX))[0]
    assert task.start_state == pytest.approx(same.start_state) and task.goal_frame == same.goal_frame
    fitted, small = _fit_frames(load_task_frames(big, task), load_model()), load_task_frames(plan_dataset, same)
    for k in ("rgb", "goal_rgb", "start_rgb", "depth", "goal_depth", "start_depth", "K"):
        a, b = getattr(fitted, k), getattr(small, k)
        assert a.shape == b.shape and a.dtype == b.dtype, k
        assert np.abs(a.astype(np.float64) - b).mean() < (4.0 if "rgb" in k else 0.1), k  # the 64 px rendering
    summary = run_plan_benchmark(tiny_config(big, tmp_path / "o", methods=("rank",), memories=("voxel-render",)))
    assert list(summary["rows"]) == ["rank/voxel-render", "rank/oracle", "rank/map-only", "random"]
    assert all(r["episodes_per_seed"] == [1] for r in summary["rows"].values())


@pytest.mark.parametrize("change,match", [
    (dict(methods=("rank", "dream")), "dream"),
    (dict(baselines=("oracle", "god")), "god"),
    (dict(methods=(), baselines=()), "--method"),
    (dict(tasks=0), "--tasks"),
    (dict(seeds=0), "--seeds"),
    (dict(execute=9), "--execute"),
    (dict(execute=0), "--execute"),
    (dict(cost="lpips"), "--cost"),
    (dict(image_cost="lpips"), "--image-cost"),
    (dict(image_cost="map"), "--image-cost"),
    (dict(split="holdout"), "--split"),
    (dict(task_seed=-1), "--task-seed"),
    (dict(stop_threshold=float("inf")), "--stop-threshold"),
])
def test_plan_config_validation(plan_dataset, tmp_path, change, match):
    with pytest.raises(ValueError, match=match):
        run_plan_benchmark(tiny_config(plan_dataset, tmp_path / "o", **change))
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------ CLI
runner = CliRunner()


def invoke(args):
    from pewm.cli.main import app

    r = runner.invoke(app, args, terminal_width=200)
    crashed = r.exception is not None and not isinstance(r.exception, SystemExit)
    return r.exit_code, r.output + ("\nTraceback (uncaught %r)" % r.exception if crashed else "")


def test_plan_help():
    code, out = invoke(["plan", "--help"])
    assert code == 0, out
    for opt in ("--data", "--out", "--model", "--split", "--tasks", "--method", "--memory", "--baselines", "--seeds",
                "--n-rank", "--n-cem", "--cem-iterations", "--horizon", "--execute", "--budget", "--prefix",
                "--proposal", "--cost", "--image-cost", "--stop-threshold", "--sampling-steps", "--videos", "--overwrite"):
        assert opt in out, opt


# (id, arguments after `plan --data {ds} --out {out}`, strings of which one must appear: the culprit)
CLI_CASES = [
    ("plan-unknown-method", ["--method", "rank,dream"], ["dream"]),
    ("plan-unknown-baseline", ["--baselines", "oracle,god"], ["god"]),
    ("plan-method-twice", ["--method", "rank,rank"], ["--method"]),
    ("plan-tasks-zero", ["--tasks", "0"], ["--tasks"]),
    ("plan-seeds-zero", ["--seeds", "0"], ["--seeds"]),
    ("plan-execute-over-horizon", ["--execute", "9", "--horizon", "8"], ["--execute"]),
    ("plan-unknown-cost", ["--cost", "lpips"], ["--cost"]),
    ("plan-unknown-image-cost", ["--image-cost", "lpips"], ["--image-cost"]),
    ("plan-image-cost-without-weights", ["--image-cost", "dinov2", "--tasks", "1", "--prefix", "60,121"], ["dinov2"]),
    # past the model and the tasks: still refused before OUT/plan_config.json is written
    ("plan-cost-without-weights", ["--cost", "dinov2", "--tasks", "1", "--prefix", "60,121"], ["dinov2"]),
    ("plan-unknown-memory", ["--memory", "voxel-render,dream-map", "--tasks", "1", "--prefix", "60,121"],
     ["dream-map"]),
    ("plan-too-many-tasks", ["--tasks", "500", "--prefix", "60,121"], ["500"]),
    ("plan-unknown-proposal", ["--proposal", "nomad"], ["nomad"]),
    ("plan-n-rank-zero", ["--n-rank", "0"], ["--n-rank"]),
    ("plan-prefix-malformed", ["--prefix", "100"], ["--prefix"]),
    ("plan-prefix-not-int", ["--prefix", "a,b"], ["--prefix"]),
    ("plan-prefix-reversed", ["--prefix", "200,100"], ["--prefix"]),
    ("plan-threads-zero", ["--threads", "0"], ["--threads"]),
    ("plan-stop-threshold-nan", ["--stop-threshold", "nan", "--tasks", "1", "--prefix", "60,121"],
     ["--stop-threshold"]),
    ("plan-stop-threshold-inf", ["--stop-threshold", "inf"], ["--stop-threshold"]),
    ("plan-task-seed-negative", ["--task-seed", "-1"], ["--task-seed"]),
    ("plan-split-early", ["--split", "holdout"], ["--split"]),
    ("plan-sampling-steps-zero", ["--sampling-steps", "0"], ["--sampling-steps"]),
    ("plan-budget-zero", ["--budget", "0"], ["--budget"]),
    ("plan-horizon-zero", ["--horizon", "0"], ["--horizon"]),
    ("plan-n-cem-zero", ["--n-cem", "-3"], ["--n-cem"]),
    ("plan-cem-iterations-zero", ["--cem-iterations", "0"], ["--cem-iterations"]),
]


@pytest.mark.parametrize("name,args,culprits", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_plan_malformed_invocation(plan_dataset, tmp_path, monkeypatch, name, args, culprits):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "p"
    code, text = invoke(["plan", "--data", str(plan_dataset), "--out", str(out), *args])
    assert code == 2 and "Traceback" not in text, text
    assert any(c in text for c in culprits), text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert lines[0].startswith("error: ") and len(lines) <= 2, text
    assert not out.exists()  # refused before anything is written


def test_plan_missing_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, text = invoke(["plan", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "p")])
    assert code == 2 and str(tmp_path / "nope") in text and "Traceback" not in text, text
    assert text.startswith("error: ") and len(text.strip().splitlines()) <= 2, text
    assert not (tmp_path / "p").exists()


def test_plan_cli_end_to_end(plan_dataset, tmp_path):
    out = tmp_path / "p"
    args = ["plan", "--data", str(plan_dataset), "--tasks", "1", "--seeds", "1", "--method", "rank",
            "--memory", "voxel-render,none", "--baselines", "random", "--n-rank", "2", "--n-cem", "3",
            "--cem-iterations", "1", "--budget", "8", "--sampling-steps", "1", "--prefix", "60,121",
            "--out", str(out)]
    code, text = invoke(args)
    assert code == 0, text
    doc = json.loads((out / "results.json").read_text())
    assert list(doc["rows"]) == ["rank/voxel-render", "rank/none", "random"]
    assert doc["config"]["task_config"]["prefix_range"] == [60, 121] and doc["config"]["task_config"]["budget"] == 8
    for name in doc["rows"]:
        assert f"| {name} |" in text
    assert "results.json" in text
    task_id = doc["tasks"][0]["task_id"]
    assert (out / "videos" / task_id / "rank-none.mp4").read_bytes()[4:8] == b"ftyp"
    # again: the finished run is refused, naming --overwrite
    code, text = invoke(args)
    assert code == 2 and "--overwrite" in text, text
    # --baselines none: only the methods' rows (the app refuses empty arguments, so not '')
    args = ["plan", "--data", str(plan_dataset), "--tasks", "1", "--seeds", "1", "--method", "rank", "--memory", "none",
            "--baselines", "none", "--n-rank", "2", "--budget", "8", "--sampling-steps", "1", "--prefix", "60,121",
            "--no-videos", "--out", str(tmp_path / "q")]
    code, text = invoke(args)
    assert code == 0, text
    assert list(json.loads((tmp_path / "q" / "results.json").read_text())["rows"]) == ["rank/none"]
    assert not (tmp_path / "q" / "videos").exists()
