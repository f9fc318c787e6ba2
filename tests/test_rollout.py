"""Persistent rollouts (Algorithm 1): RolloutMemory, rollout() and WorldModelEnv on the micro model."""

import math

import numpy as np
import pytest
import torch

from pewm.geometry import Intrinsics, camera_pose_from_agent, intrinsics_from_fov, poses_from_actions
from pewm.model import MemoryInput, SamplingConfig, WorldModel, from_preset
from pewm.model.memory_build import MemoryBuilder
from pewm.model.readers.frames import FrameStore
from pewm.model.testing import torch_threads
from pewm.rollout import RolloutMemory, WorldModelEnv, rollout

READERS = ("voxel-xattn", "voxel-render", "frames", "none", "voxel-xattn+cells")
VARIANTS = {"voxel-xattn+cells": ("voxel-xattn", {"cell_tokens": 2})}  # reader options read differently
STEPS = 2  # DDIM steps: enough to exercise sampling, fast
SAMPLING = SamplingConfig(steps=STEPS)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with torch_threads(1):
        yield


_MODELS: dict[str, WorldModel] = {}


def _cfg(reader: str):
    name, options = VARIANTS.get(reader, (reader, {}))
    return from_preset("micro", reader=name, reader_options=options)


def _model(reader="voxel-xattn") -> WorldModel:
    if reader not in _MODELS:
        torch.manual_seed(0)
        _MODELS[reader] = WorldModel(_cfg(reader)).eval()
    return _MODELS[reader]


def _start(B=2, h=16, w=16, seed=0):
    """Synthetic start frames: random colour, a wall 2 m in front; rollouts start apart."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (B, h, w, 3), dtype=np.uint8)
    depth = np.full((B, h, w), 2.0, np.float32)
    pose = np.stack([camera_pose_from_agent(1.0 + b, -0.5 * b, 0.3 * b, 1.2) for b in range(B)])
    return rgb, depth, pose, intrinsics_from_fov(w, h, 90.0)


def _history(M=3, h=32, w=32, seed=1):
    """``M`` frames at another resolution than the model's, along a short walk."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (M, h, w, 3), dtype=np.uint8)
    depth = (1.5 + rng.random((M, h, w))).astype(np.float32)
    poses = poses_from_actions(camera_pose_from_agent(0.5, 0.0, 0.0, 1.2), [0, 1, 0][: M - 1])
    return rgb, depth, poses, intrinsics_from_fov(w, h, 90.0).matrix


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# -- rollout -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [4, 5])  # a multiple of H = 2, and not
def test_rollout_shapes_poses_and_start_frame(T):
    m = _model()
    H = m.config.frames
    rgb, depth, pose, K = _start()
    actions = np.array([[0, 1, 0, 2, 0][:T], [2, 2, 0, 0, 1][:T]])
    r = rollout(m, rgb, depth, pose, K, actions, sampling=SAMPLING, generator=_gen())
    assert r.rgb.shape == (2, T + 1, 16, 16, 3) and r.rgb.dtype == torch.uint8
    assert r.depth.shape == (2, T + 1, 16, 16) and r.depth.dtype == torch.float32
    assert r.poses.shape == (2, T + 1, 4, 4) and r.poses.dtype == torch.float64
    assert r.num_chunks == math.ceil(T / H) == len(r.memory_sizes) == len(r.generate_seconds)
    # frame 0 is the start frame, unchanged
    assert np.array_equal(r.rgb[:, 0].numpy(), rgb) and np.array_equal(r.depth[:, 0].numpy(), depth)
    assert np.array_equal(r.poses[:, 0].numpy(), pose)
    # actions[t] leads from frame t to frame t + 1
    for b in range(2):
        np.testing.assert_allclose(r.poses[b].numpy(), poses_from_actions(pose[b], actions[b]), atol=1e-12)
    assert float(r.depth[:, 1:].min()) > 0


def test_memory_grows_only_with_fused_frames_and_padding_is_not_fused():
    m = _model("frames")
    rgb, depth, pose, K = _start()
    T = 3  # two chunks of H = 2; the second is padded by one frame that must not be stored
    r = rollout(m, rgb, depth, pose, K, [0, 1, 0], sampling=SAMPLING, generator=_gen())
    assert r.start_memory_sizes == [1, 1]
    assert r.memory_sizes == [[3, 3], [4, 4]]
    assert [mem.frames_added for mem in r.memories] == [T + 1, T + 1]
    # ablation: the map is never updated by generated frames
    r0 = rollout(m, rgb, depth, pose, K, [0, 1, 0], sampling=SAMPLING, generator=_gen(), fuse_generated=False)
    assert r0.memory_sizes == [[1, 1], [1, 1]] and len(r0.memories[0]) == 1
    r1 = rollout(m, rgb, depth, pose, K, [0, 1, 0], sampling=SAMPLING, generator=_gen(), fuse_start=False)
    assert r1.start_memory_sizes == [0, 0] and r1.memory_sizes[-1] == [3, 3]


def test_voxel_map_holds_exactly_the_kept_frames():
    """The rollout's map (built chunk by chunk, padding discarded) equals a map built in one go from
    the returned frames; without fusing, it stays as after the start frame."""
    m = _model("voxel-xattn")
    b = MemoryBuilder(m.config)
    rgb, depth, pose, K = _start(B=1)
    r = rollout(m, rgb, depth, pose, K, [[0, 0, 1]], sampling=SAMPLING, generator=_gen(), builder=b)
    mem = r.memories[0]
    assert len(mem) > r.start_memory_sizes[0] > 0
    ref = RolloutMemory.from_frames(b, r.rgb[0], r.depth[0], r.poses[0], K)
    assert len(ref) == len(mem) and ref.frames_added == mem.frames_added == 4
    target = r.poses[0, -2:].numpy()
    a, e = mem.read(r.poses[0, -1].numpy(), target), ref.read(r.poses[0, -1].numpy(), target)
    assert torch.equal(a.mask, e.mask) and torch.equal(a.tokens, e.tokens) and torch.equal(a.positions, e.positions)
    frozen = rollout(m, rgb, depth, pose, K, [[0, 0, 1]], sampling=SAMPLING, generator=_gen(), builder=b,
                     fuse_generated=False)
    assert [s[0] for s in frozen.memory_sizes] == [frozen.start_memory_sizes[0]] * 2


def test_rollout_is_deterministic_with_a_seeded_generator():
    m = _model("voxel-render")
    rgb, depth, pose, K = _start()
    a = rollout(m, rgb, depth, pose, K, [0, 1, 0], sampling=SAMPLING, generator=_gen(3))
    b = rollout(m, rgb, depth, pose, K, [0, 1, 0], sampling=SAMPLING, generator=_gen(3))
    c = rollout(m, rgb, depth, pose, K, [0, 1, 0], sampling=SAMPLING, generator=_gen(4))
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.depth, b.depth) and a.memory_sizes == b.memory_sizes
    assert not torch.equal(a.depth[:, 1:], c.depth[:, 1:])


def test_rollout_continues_from_a_given_memory_and_copies_are_independent():
    m = _model("frames")
    b = MemoryBuilder(m.config)
    hist = _history(M=3)
    start_mem = RolloutMemory.from_frames(b, *hist)  # 32x32 frames; the model works at 16x16
    assert len(start_mem) == 3
    mems = [start_mem.copy(), start_mem.copy()]
    rgb, depth, pose, K = _start()
    r = rollout(m, rgb, depth, pose, K, [[0, 0], [1, 1]], memories=mems, sampling=SAMPLING, generator=_gen())
    assert r.memories[0] is mems[0] and r.memory_sizes[-1] == [3 + 1 + 2] * 2
    assert len(start_mem) == 3  # the original is untouched
    mem = r.memories[0].read(pose[0], poses_from_actions(pose[0], [0, 0])[1:])
    assert mem.frames.shape == (1, m.config.max_memory_frames, 4, 16, 16) and bool(mem.frame_mask.all())


@pytest.mark.parametrize("reader", READERS)
def test_memory_read_and_rollout_for_every_reader(reader):
    m = _model(reader)
    cfg = m.config
    H, h, w = cfg.frames, cfg.image_height, cfg.image_width
    b = MemoryBuilder(cfg)
    mem = RolloutMemory.from_frames(b, *_history())
    assert (mem.pmap is not None) == reader.startswith("voxel")
    assert isinstance(mem.store, FrameStore) == (reader == "frames")
    assert (mem.store is None) == (reader == "none")
    assert (len(mem) > 0) == (reader != "none") and mem.frames_added == 3
    cur = camera_pose_from_agent(0.5, 0.0, 0.0, 1.2)
    out = mem.read(cur, poses_from_actions(cur, [0] * H)[1:], K=intrinsics_from_fov(w, h, 90.0))
    assert isinstance(out, MemoryInput)
    if reader == "voxel-xattn":
        assert out.tokens.shape == (1, cfg.max_memory_tokens, cfg.memory_dim) and bool(out.mask.any())
    elif reader == "voxel-xattn+cells":
        cells = cfg.frame_height * cfg.frame_width
        assert out.cell_index.shape == (1, H + 1, cells, 2) and bool(out.mask.all())
        assert float((out.cell_index[..., 0] >= 0).float().mean()) > 0.5
    elif reader == "voxel-render":
        assert out.rendered.shape == (1, H, 5, h, w) and float(out.rendered[:, :, 4].mean()) > 0.2
    elif reader == "frames":
        assert out.frames.shape == (1, cfg.max_memory_frames, 4, h, w) and int(out.frame_mask.sum()) == 2
    else:
        assert all(v is None for v in vars(out).values())
    rgb, depth, pose, K = _start(B=1)
    r = rollout(m, rgb, depth, pose, K, [0, 2, 0], memories=[mem], sampling=SAMPLING, generator=_gen())
    assert r.rgb.shape == (1, 4, h, w, 3)
    assert r.memory_sizes[-1][0] >= len(RolloutMemory.from_frames(b, *_history())) + (reader == "frames") * 4


@pytest.mark.parametrize("reader", READERS)
def test_from_frames_matches_from_history(reader):
    cfg = _cfg(reader)
    b = MemoryBuilder(cfg)
    rgb, depth, poses, K = _history(M=3)
    cur = poses[-1]
    target = poses_from_actions(cur, [0, 1])[1:]
    want = b.from_history(rgb, depth, poses, K, cur, target)
    got = RolloutMemory.from_frames(b, rgb, depth, poses, K).read(cur, target)
    for name, v in vars(want).items():
        g = getattr(got, name)
        assert (v is None) == (g is None), name
        if v is not None:
            assert torch.equal(v, g), name
    # frame by frame gives the same memory as all at once
    inc = RolloutMemory(b)
    for i in range(3):
        inc.add(rgb[i], depth[i], poses[i], K)
    for name, v in vars(want).items():
        if v is not None:
            assert torch.allclose(v.float(), getattr(inc.read(cur, target), name).float(), atol=1e-5), name


def test_frames_memory_accepts_frames_of_another_resolution():
    b = MemoryBuilder(from_preset("micro", reader="frames"))
    mem = RolloutMemory.from_frames(b, *_history(M=2, h=32, w=32))
    rgb, depth, pose, K = _start(B=1)
    mem.add(rgb, depth, pose, K)  # 16x16: stored resized to 32x32 with scaled intrinsics
    assert len(mem) == 3 and tuple(mem.store.memory._depth[-1].shape) == (32, 32)
    np.testing.assert_allclose(mem.store.memory._K[-1].numpy(), K.scaled(32, 32).matrix, rtol=1e-6)
    out = mem.read(pose[0], poses_from_actions(pose[0], [0, 0])[1:])
    assert out.frames.shape == (1, 2, 4, 16, 16)


def test_rollout_from_a_simulator_frame():
    from pewm.sim import EmbodiedEnv, SimConfig

    sim = EmbodiedEnv(SimConfig(resolution=16))
    try:
        obs, _ = sim.reset(seed=3)
        frames = [obs]
        for a in (1, 1):
            frames.append(sim.step(a)[0])
        K = sim.intrinsics
    finally:
        sim.close()
    m = _model("voxel-xattn")
    b = MemoryBuilder(m.config)
    hist = [np.stack([f[k] for f in frames[:-1]]) for k in ("rgb", "depth", "pose")]
    mem = RolloutMemory.from_frames(b, *hist, K)
    before = len(mem)
    start = frames[-1]
    r = rollout(m, start["rgb"], start["depth"], start["pose"], K, [1, 1, 0], memories=[mem], sampling=SAMPLING,
                generator=_gen())
    assert before > 0 and r.start_memory_sizes[0] >= before and len(mem) >= r.start_memory_sizes[0]
    assert np.array_equal(r.rgb[0, 0].numpy(), start["rgb"])
    np.testing.assert_allclose(r.poses[0].numpy(), poses_from_actions(start["pose"], [1, 1, 0]), atol=1e-12)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(rgb=np.zeros((2, 8, 8, 3), np.uint8)), r"rgb has resolution 8x8"),
        (dict(rgb=np.zeros((2, 16, 16, 3), np.float32)), r"rgb must be \(B, h, w, 3\) uint8"),
        (dict(depth=np.ones((3, 16, 16))), r"depth has shape \(3, 16, 16\), expected \(2, 16, 16\)"),
        (dict(pose=np.eye(4)[None]), r"pose has shape \(1, 4, 4\), expected \(2, 4, 4\)"),
        (dict(actions=np.zeros((3, 4), int)), r"actions has shape \(3, 4\), expected \(B=2, T\)"),
        (dict(actions=np.zeros((2, 0), int)), r"T >= 1"),
        (dict(actions=[[0, 5], [0, 0]]), r"actions: invalid action id 5"),
        (dict(K=Intrinsics(8, 8, 15.5, 15.5, 32, 32)), r"K: intrinsics are for 32x32"),
        (dict(K=np.eye(4)), r"K has shape \(4, 4\)"),
        (dict(memories="x"), r"memories must be a list"),
        (dict(memories=[None]), r"memories has 1 entries, expected one per rollout \(B=2\)"),
    ],
)
def test_rollout_rejects_bad_inputs_naming_the_argument(change, match):
    m = _model()
    rgb, depth, pose, K = _start()
    kw = dict(rgb=rgb, depth=depth, pose=pose, K=K, actions=[[0, 1], [0, 1]], memories=None)
    kw.update(change)
    with pytest.raises(ValueError, match=match):
        rollout(m, kw["rgb"], kw["depth"], kw["pose"], kw["K"], kw["actions"], memories=kw["memories"],
                sampling=SAMPLING)


def test_rollout_rejects_memories_of_another_reader_or_shared():
    m = _model("voxel-xattn")
    rgb, depth, pose, K = _start()
    other = RolloutMemory(MemoryBuilder(from_preset("micro", reader="frames")))
    same = RolloutMemory(MemoryBuilder(m.config))
    with pytest.raises(ValueError, match=r"memories\[0\] is for reader 'frames'"):
        rollout(m, rgb, depth, pose, K, [0], memories=[other, same.copy()])
    with pytest.raises(ValueError, match=r"appears twice"):
        rollout(m, rgb, depth, pose, K, [0], memories=[same, same])



@pytest.mark.parametrize("reader", ["voxel-render", "frames"])
def test_rollout_along_poses_is_bit_identical_to_rollout_of_actions(reader):
    """Recordings have poses, not actions: the same camera path given as poses rolls out exactly the
    same frames (T = 5: a partial last chunk padded with "stay" poses)."""
    m = _model(reader)
    rgb, depth, pose, K = _start()
    actions = np.array([[0, 1, 0, 2, 0], [2, 2, 0, 0, 1]])
    fut = np.stack([poses_from_actions(pose[b], actions[b])[1:] for b in range(2)])
    sampling = SamplingConfig(steps=STEPS, anchor="both") if reader == "voxel-render" else SAMPLING
    a = rollout(m, rgb, depth, pose, K, actions, sampling=sampling, generator=_gen(2))
    p = rollout(m, rgb, depth, pose, K, poses=fut, sampling=sampling, generator=_gen(2))
    assert p.actions is None and np.array_equal(a.actions, actions)
    assert torch.equal(a.rgb, p.rgb) and torch.equal(a.depth, p.depth) and torch.equal(a.poses, p.poses)
    assert a.memory_sizes == p.memory_sizes and a.num_chunks == p.num_chunks == 3
    # one (T, 4, 4) path for every rollout
    one = rollout(m, rgb, depth, pose[:1].repeat(2, 0), K, poses=fut[0], sampling=SAMPLING, generator=_gen())
    assert one.rgb.shape == (2, 6, 16, 16, 3) and torch.equal(one.poses[0, 1:], one.poses[1, 1:])


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(), r"exactly one of actions=.* or poses="),
        (dict(actions=[0], poses=np.eye(4)[None]), r"exactly one of actions="),
        (dict(poses=np.eye(4)), r"poses has shape \(4, 4\), expected \(B=2, T, 4, 4\)"),
        (dict(poses=np.tile(np.eye(4), (3, 1, 1, 1))), r"poses has shape \(3, 1, 4, 4\)"),
        (dict(poses=np.full((2, 1, 4, 4), np.nan)), r"poses contains NaN"),
        (dict(poses=np.tile(np.diag([1.0, 1.0, -1.0, 1.0]), (2, 1, 1, 1))), r"poses rotation block has determinant -1"),
    ],
)
def test_rollout_rejects_bad_poses_naming_the_argument(kw, match):
    rgb, depth, pose, K = _start()
    with pytest.raises(ValueError, match=match):
        rollout(_model(), rgb, depth, pose, K, sampling=SAMPLING, **kw)


def test_intrinsics_far_from_the_training_field_of_view_are_refused():
    m = _model("frames")
    rgb, depth, pose, _ = _start()
    narrow = intrinsics_from_fov(16, 16, 20.0)
    with pytest.raises(ValueError, match=r"K: vertical field of view 20\.0 deg .* outside the 40-135 deg .* 90 deg"):
        rollout(m, rgb, depth, pose, narrow, [0], sampling=SAMPLING)
    with pytest.raises(ValueError, match=r"K\[1\]: vertical field of view 160\.0 deg"):
        rollout(m, rgb, depth, pose, np.stack([intrinsics_from_fov(16, 16, 90.0).matrix,
                                               intrinsics_from_fov(16, 16, 160.0).matrix]), [0], sampling=SAMPLING)
    with pytest.raises(ValueError, match=r"allow_any_fov=True"):
        m.generate(rgb, depth, pose, narrow, actions=[0] * m.config.frames, sampling=SAMPLING)
    with pytest.raises(ValueError, match=r"K: vertical field of view"):
        WorldModelEnv(m, num_envs=2, K=narrow)
    # the TUM (~50 deg) and ScanNet (~45 deg) cameras pass; allow_any_fov lets anything through
    for fov in (45.0, 50.0, 90.0, 130.0):
        rollout(m, rgb, depth, pose, intrinsics_from_fov(16, 16, fov), [0], sampling=SAMPLING)
    r = rollout(m, rgb, depth, pose, narrow, [0], sampling=SAMPLING, allow_any_fov=True)
    assert r.rgb.shape == (2, 2, 16, 16, 3)
    m.generate(rgb, depth, pose, narrow, actions=[0] * m.config.frames, sampling=SAMPLING, allow_any_fov=True)
    assert WorldModelEnv(m, num_envs=2, K=narrow, allow_any_fov=True).K.shape == (2, 3, 3)


# -- WorldModelEnv -------------------------------------------------------------------------------------


def test_env_reset_step_and_step_chunk():
    m = _model("voxel-xattn")
    H = m.config.frames
    env = WorldModelEnv(m, num_envs=2, sampling=SAMPLING, seed=0)
    assert env.render() is None
    with pytest.raises(RuntimeError, match="call reset"):
        env.step([0, 0])
    rgb, depth, pose, _ = _start()
    obs, info = env.reset(options={"rgb": rgb, "depth": depth, "pose": pose})
    assert env.observation_space.contains(obs) and np.array_equal(obs["rgb"], rgb)
    start_sizes = info["memory_sizes"].copy()
    assert (start_sizes > 0).all()

    obs, rew, term, trunc, info = env.step(np.array([0, 1]))
    assert env.observation_space.contains(obs)
    assert rew.shape == term.shape == trunc.shape == (2,) and not term.any() and not trunc.any() and not rew.any()
    for b, a in enumerate((0, 1)):
        np.testing.assert_allclose(obs["pose"][b], poses_from_actions(pose[b], [a])[1], atol=1e-12)
    assert [mem.frames_added for mem in env.memories] == [2, 2] and env.step_count == 1
    assert np.array_equal(env.render(), obs["rgb"][0])

    acts = np.array([[0, 2], [1, 0]])[:, :H]
    prev = obs["pose"]
    chunk, rew, term, trunc, info = env.step_chunk(acts)
    assert chunk["rgb"].shape == (2, H, 16, 16, 3) and chunk["depth"].shape == (2, H, 16, 16)
    assert rew.shape == term.shape == (2, H)
    for b in range(2):
        np.testing.assert_allclose(chunk["pose"][b], poses_from_actions(prev[b], acts[b])[1:], atol=1e-12)
    assert [mem.frames_added for mem in env.memories] == [2 + H, 2 + H] and (info["memory_sizes"] >= start_sizes).all()
    assert np.array_equal(env.render(), chunk["rgb"][0, -1])


def test_env_step_poses_imagines_the_same_frames_as_the_actions():
    m = _model("voxel-render")
    H = m.config.frames
    rgb, depth, pose, _ = _start()
    acts = np.array([[0, 2], [1, 0]])[:, :H]
    runs = []
    for use_poses in (False, True):
        env = WorldModelEnv(m, num_envs=2, sampling=SAMPLING, seed=3)
        env.reset(options={"rgb": rgb, "depth": depth, "pose": pose})
        if use_poses:
            fut = np.stack([poses_from_actions(pose[b], acts[b])[1:] for b in range(2)])
            out = env.step_poses(fut)
        else:
            out = env.step_chunk(acts)
        runs.append((out, [len(mm) for mm in env.memories], env.step_count))
    (a, sa, na), (p, sp, np_) = runs
    assert all(np.array_equal(a[0][k], p[0][k]) for k in ("rgb", "depth", "pose"))
    assert sa == sp and na == np_ == H and a[1].shape == p[1].shape == (2, H)
    with pytest.raises(ValueError, match=r"step_poses: poses has shape \(4, 4\), expected \(num_envs=2, k, 4, 4\)"):
        env.step_poses(np.eye(4))
    with pytest.raises(ValueError, match=r"poses has 3 poses per rollout, at most 2"):
        env.step_poses(np.tile(np.eye(4), (2, 3, 1, 1)))


def test_env_reset_with_memory_and_seed_is_reproducible():
    m = _model("frames")
    env = WorldModelEnv(m, num_envs=2, sampling=SAMPLING)
    rgb, depth, pose, _ = _start(B=1)
    hr, hd, hp, hK = _history(M=2)
    opts = {"rgb": rgb[0], "depth": depth[0], "pose": pose[0], "memory": {"rgb": hr, "depth": hd, "poses": hp, "K": hK}}
    obs, info = env.reset(seed=5, options=opts)
    assert obs["rgb"].shape == (2, 16, 16, 3) and list(info["memory_sizes"]) == [3, 3]
    assert env.memories[0] is not env.memories[1]
    first = env.step([0, 2])[0]
    env.reset(seed=5, options=opts)
    again = env.step([0, 2])[0]
    assert np.array_equal(first["rgb"], again["rgb"]) and np.array_equal(first["depth"], again["depth"])
    # one memory per env
    per_env = [opts["memory"], {"rgb": hr[:1], "depth": hd[:1], "poses": hp[:1], "K": hK}]
    _, info = env.reset(options={**opts, "memory": per_env})
    assert list(info["memory_sizes"]) == [3, 2]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda e: e.step([0, 0, 0]), r"step: actions has shape \(3,\), expected \(num_envs=2,\)"),
        (lambda e: e.step([0, 7]), r"invalid action id 7"),
        (lambda e: e.step_chunk([0, 1]), r"step_chunk: actions has shape \(2,\)"),
        (lambda e: e.step_chunk(np.zeros((2, 3), int)), r"at most 2 \(one chunk of H frames\)"),
        (lambda e: e.reset(options={"rgb": np.zeros((2, 16, 16, 3), np.uint8)}), r"missing \['depth', 'pose'\]"),
        (lambda e: e.reset(options={**_opts(), "memory": [{}]}), r"list of 1, expected one per env"),
        (lambda e: e.reset(options={**_opts(), "memory": {"rgb": 1}}), r"must have exactly the keys"),
        (lambda e: e.reset(options={**_opts(), "extra": 1}), r"unknown option\(s\) \['extra'\]"),
    ],
)
def test_env_rejects_bad_actions_and_options(call, match):
    env = WorldModelEnv(_model(), num_envs=2, sampling=SAMPLING)
    env.reset(options=_opts())
    with pytest.raises(ValueError, match=match):
        call(env)


def _opts():
    rgb, depth, pose, _ = _start()
    return {"rgb": rgb, "depth": depth, "pose": pose}


def test_env_spaces():
    env = WorldModelEnv(_model(), num_envs=3)
    assert env.action_space.shape == (3,) and list(env.action_space.nvec) == [3, 3, 3]
    assert env.observation_space["rgb"].shape == (3, 16, 16, 3) and env.observation_space["pose"].dtype == np.float64
    np.testing.assert_allclose(env.K[0], intrinsics_from_fov(16, 16, 90.0).matrix)
    with pytest.raises(ValueError, match="num_envs must be a positive integer"):
        WorldModelEnv(_model(), num_envs=0)


def test_novel_only_fusion_never_overwrites_what_the_map_holds():
    """A generated view of an already mapped place (here: junk 0.5 m in front of the mapped wall)
    adds nothing with novel_only; fused literally it adds a surface that would occlude the wall."""
    builder = MemoryBuilder(_model("voxel-render").config)
    rgb, depth, pose, K = _start(B=1)
    base = RolloutMemory.from_frames(builder, rgb, depth, pose, K)
    n_surface = len(base.pmap.surface)
    junk = np.full_like(depth, 1.5)
    kept = base.copy()
    kept.add(rgb, junk, pose, K, novel_only=True)
    assert len(kept.pmap.surface) == n_surface and kept.frames_added == 2
    literal = base.copy()
    literal.add(rgb, junk, pose, K, novel_only=False)
    assert len(literal.pmap.surface) > n_surface
    # a view that turns away sees uncovered space: its pixels are fused
    turned = poses_from_actions(pose[0], [1] * 6)[-1][None]
    grown = base.copy()
    grown.add(rgb, depth, turned, K, novel_only=True)
    assert len(grown.pmap.surface) > n_surface


def test_close_holes_fills_gaps_inside_coverage_but_keeps_its_border():
    from pewm.model.rollout_memory import close_holes

    m = torch.zeros(1, 16, 16, dtype=torch.bool)
    m[:, 4:12, 4:12] = True
    m[:, 7, 7] = m[:, 8, 6:10] = False  # sparse-sampling gaps (1 and up to 4 pixels)
    out = close_holes(m, 2)
    assert bool(out[:, 4:12, 4:12].all()), "gaps inside the coverage are filled"
    assert not bool(out[:, :4].any()) and not bool(out[:, :, 12:].any()), "the border does not grow"
    edge = torch.zeros(1, 16, 16, dtype=torch.bool)
    edge[:, :, 2:8] = True  # 2 pixels from the image edge: that strip counts as covered
    assert bool(close_holes(edge, 2)[:, :, :8].all()) and not bool(close_holes(edge, 2)[:, :, 8:].any())
    assert torch.equal(close_holes(m, 0), m)
    wide = torch.zeros(1, 12, 12, dtype=torch.bool)
    wide[:, :, :3] = wide[:, :, 9:] = True  # a 6-pixel gap: a real unseen region, kept novel
    assert not bool(close_holes(wide, 2)[:, :, 4:8].any())


@pytest.mark.parametrize("reader", ["voxel-render", "frames"])
def test_env_with_memory_off_reads_an_empty_memory_and_still_records(reader):
    """``use_memory = False``: the frame is what an empty memory gives (same noise), and the
    imagined frames are fused all the same; switching back on reads them."""
    torch.manual_seed(1)
    m = WorldModel(from_preset("micro", reader=reader)).eval()
    with torch.no_grad():  # zero-initialised output layers would hide the memory's effect
        for prm in m.parameters():
            if not prm.any():
                prm.normal_(0, 0.05)
    rgb, depth, pose, _ = _start(B=1)
    hist = dict(zip(("rgb", "depth", "poses", "K"), _history()))
    off = WorldModelEnv(m, sampling=SAMPLING, seed=3)
    off.reset(options={"rgb": rgb, "depth": depth, "pose": pose, "memory": hist})
    off.use_memory = False
    on = WorldModelEnv(m, sampling=SAMPLING, seed=3)
    on.reset(options={"rgb": rgb, "depth": depth, "pose": pose, "memory": hist})
    before = off.memories[0].frames_added
    a, b = off.step([0])[0], on.step([0])[0]
    assert not np.array_equal(a["rgb"], b["rgb"])  # the memory matters to this model
    assert off.memories[0].frames_added == before + 1
    ref = WorldModelEnv(m, sampling=SAMPLING, seed=3)
    ref.reset(options={"rgb": rgb, "depth": depth, "pose": pose})
    ref.use_memory = False
    assert np.array_equal(ref.step([0])[0]["rgb"], a["rgb"])  # off = an empty memory, whatever is in it
    off.use_memory = True
    assert not np.array_equal(off.step([0])[0]["rgb"], ref.step([0])[0]["rgb"])


def test_depth_edges_marks_both_sides_of_a_jump_and_nothing_on_smooth_depth():
    from pewm.model.rollout_memory import depth_edges

    d = torch.full((1, 8, 8), 2.0)
    d[:, :, 4:] = 4.0  # a wall 2 m behind a foreground
    e = depth_edges(d, 0.1)
    assert bool(e[:, :, 3:5].all()) and not bool(e[:, :, :3].any()) and not bool(e[:, :, 5:].any())
    ramp = 2.0 + 0.05 * torch.arange(8.0)[None, None].expand(1, 8, 8)  # a slanted wall: < 3 % per pixel
    assert not bool(depth_edges(ramp, 0.1).any())
    assert bool(depth_edges(ramp, 0.01).any()), "a tolerance below the slope marks it"


def test_imagined_frames_are_not_fused_on_depth_edges_with_a_tolerance_set():
    """``imagined_edge_tol`` leaves a generated frame's depth discontinuities unfused; observed frames
    and a builder without the setting fuse every pixel."""
    from pewm.model.memory_build import MemoryBuildConfig

    cfg = _model("voxel-render").config
    rgb, depth, pose, K = _start(B=1)
    depth = depth.copy()
    depth[:, :, 8:] = 4.0
    plain = RolloutMemory(MemoryBuilder(cfg))
    plain.add(rgb, depth, pose, K, imagined=True)
    strict = MemoryBuilder(cfg, MemoryBuildConfig(imagined_edge_tol=0.1))
    observed = RolloutMemory(strict)
    observed.add(rgb, depth, pose, K)
    imagined = RolloutMemory(strict)
    imagined.add(rgb, depth, pose, K, imagined=True)
    assert len(observed.pmap.surface) == len(plain.pmap.surface)
    assert 0 < len(imagined.pmap.surface) < len(plain.pmap.surface)
    cut = depth.copy()
    cut[0, :, 7:9] = 0.0  # the same frame with the two columns at the jump invalid
    ref = RolloutMemory(MemoryBuilder(cfg))
    ref.add(rgb, cut, pose, K)
    assert len(imagined.pmap.surface) == len(ref.pmap.surface)
    with pytest.raises(ValueError, match="imagined_edge_tol"):
        MemoryBuildConfig(imagined_edge_tol=0)


@pytest.mark.parametrize("fuse", ["novel", "all", "none"])
def test_fuse_modes_decide_what_the_rollout_remembers(fuse):
    from pewm.rollout import FUSE_MODES, fuse_flags

    assert fuse in FUSE_MODES
    model = _model("voxel-render")
    rgb, depth, pose, K = _start(B=1)
    builder = MemoryBuilder.for_model(model)
    mem = RolloutMemory.from_frames(builder, rgb, depth, pose, K)
    n0 = len(mem.pmap.surface)
    fuse_generated, novel_only = fuse_flags(fuse)
    rollout(model, rgb, depth, pose, K, actions=np.array([[1] * 8]), memories=[mem], fuse_start=False,
            fuse_generated=fuse_generated, fuse_novel_only=novel_only, sampling=SAMPLING, generator=_gen())
    assert mem.frames_added == (1 if fuse == "none" else 9)
    assert (len(mem.pmap.surface) == n0) == (fuse == "none")
    with pytest.raises(ValueError, match="--fuse must be one of novel, all, none; got 'some'"):
        fuse_flags("some")


def test_imagined_fuse_delay_fuses_each_generated_chunk_after_d_later_chunks():
    """With ``imagined_fuse_delay_chunks`` D, a generated chunk (one ``add`` call) is fused once D later
    chunks were added, as it would have been at once; observed frames are fused at once; copies keep
    their own queue."""
    from pewm.model.memory_build import MemoryBuildConfig

    cfg = _model("voxel-render").config
    rgb, depth, _, K = _history(M=6, h=16, w=16)
    pose = poses_from_actions(camera_pose_from_agent(0.5, 0.0, 0.0, 1.2), [1, 1, 1, 1, 1])  # turning: new views
    delayed = RolloutMemory(MemoryBuilder(cfg, MemoryBuildConfig(imagined_fuse_delay_chunks=2)))
    direct = RolloutMemory(MemoryBuilder(cfg))
    for m in (delayed, direct):
        m.add(rgb[:1], depth[:1], pose[:1], K)  # observed: at once
    chunks = [slice(1, 3), slice(3, 4), slice(4, 5), slice(5, 6)]
    delayed.add(rgb[chunks[0]], depth[chunks[0]], pose[chunks[0]], K, novel_only=True, imagined=True)
    delayed.add(rgb[chunks[1]], depth[chunks[1]], pose[chunks[1]], K, novel_only=True, imagined=True)
    assert delayed.pending == 3 and delayed.frames_added == 1 and len(delayed) == len(direct)
    delayed.add(rgb[chunks[2]], depth[chunks[2]], pose[chunks[2]], K, novel_only=True, imagined=True)
    direct.add(rgb[chunks[0]], depth[chunks[0]], pose[chunks[0]], K, novel_only=True, imagined=True)
    assert delayed.pending == 2 and delayed.frames_added == 3
    view = torch.as_tensor(pose[5]).float()
    assert torch.equal(delayed.pmap.surface.render(K, view, 16, 16).image, direct.pmap.surface.render(K, view, 16, 16).image)
    kept = delayed.copy()
    delayed.add(rgb[chunks[3]], depth[chunks[3]], pose[chunks[3]], K, novel_only=True, imagined=True)
    direct.add(rgb[chunks[1]], depth[chunks[1]], pose[chunks[1]], K, novel_only=True, imagined=True)
    assert delayed.pending == 2 and delayed.frames_added == 4 and len(delayed) == len(direct)
    assert kept.pending == 2 and kept.frames_added == 3, "a copy keeps its own queue"
    kept.flush()  # (training's imagined memories: fuse what waits now)
    assert kept.pending == 0 and kept.frames_added == 5
    direct.add(rgb[chunks[2]], depth[chunks[2]], pose[chunks[2]], K, novel_only=True, imagined=True)
    assert torch.equal(kept.pmap.surface.render(K, view, 16, 16).image, direct.pmap.surface.render(K, view, 16, 16).image)
    with pytest.raises(ValueError, match="imagined_fuse_delay_chunks"):
        MemoryBuildConfig(imagined_fuse_delay_chunks=-1)