"""Episode validation: every field and problem is named in the error."""

import numpy as np
import pytest

from pewm.data import Episode, EpisodeError
from pewm.geometry import camera_pose_from_agent, intrinsics_from_fov, poses_from_actions


def make_episode(T=6, H=12, W=16, seed=0, **kw):
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, 3, T - 1)
    poses = poses_from_actions(camera_pose_from_agent(1.0, 2.0, 0.3, 1.25), actions)
    args = dict(
        rgb=rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8),
        depth=rng.uniform(0.0, 8.0, (T, H, W)).astype(np.float32),
        poses=poses,
        actions=actions.astype(np.int64),
        intrinsics=intrinsics_from_fov(W, H, 90.0),
        collided=np.zeros(T - 1, bool),
        episode_id="ep-a",
        house_id="house-1",
        split="train",
        kind="shortest",
        meta={"seed": seed},
    )
    args.update(kw)
    return Episode(**args)


def test_valid_episode_and_properties():
    ep = make_episode(T=5, H=12, W=16).validate()
    assert (ep.num_frames, ep.height, ep.width) == (5, 12, 16)
    assert len(ep) == 5


def test_create_converts_losslessly():
    ep = make_episode()
    e2 = Episode.create(
        ep.rgb, ep.depth.astype(np.float64), ep.poses.astype(np.float32), ep.actions.astype(np.int32),
        ep.intrinsics, collided=ep.collided.astype(np.uint8), episode_id="x",
    )
    assert e2.depth.dtype == np.float32 and e2.poses.dtype == np.float64
    assert e2.actions.dtype == np.int64 and e2.collided.dtype == np.bool_
    with pytest.raises(EpisodeError, match="depth"):
        Episode.create(ep.rgb, (ep.depth * 1000).astype(np.uint16), ep.poses, ep.actions, ep.intrinsics)
    with pytest.raises(EpisodeError, match="actions"):
        Episode.create(ep.rgb, ep.depth, ep.poses, ep.actions + 0.5, ep.intrinsics)


def _bad_pose():
    p = make_episode().poses.copy()
    p[2, :3, :3] *= 1.5
    return p


def _nan_pose():
    p = make_episode().poses.copy()
    p[3, 0, 3] = np.nan
    return p


def _neg_depth():
    d = make_episode().depth.copy()
    d[1, 2, 3] = -0.5
    return d


def _nan_depth():
    d = make_episode().depth.copy()
    d[4, 0, 0] = np.nan
    return d


@pytest.mark.parametrize(
    "change, pattern",
    [
        (dict(rgb=np.zeros((6, 12, 16, 3), np.float32)), "rgb: expected dtype uint8"),
        (dict(rgb=np.zeros((6, 12, 16), np.uint8)), r"rgb: expected shape \(T, H, W, 3\)"),
        (dict(depth=np.zeros((6, 12, 16), np.float64)), "depth: expected dtype float32"),
        (dict(depth=np.zeros((5, 12, 16), np.float32)), "depth: expected shape"),
        (dict(poses=np.tile(np.eye(4, dtype=np.float32), (6, 1, 1))), "poses: expected dtype float64"),
        (dict(poses=np.tile(np.eye(4), (5, 1, 1))), "poses: expected shape"),
        (dict(poses=_nan_pose()), "poses: frame 3 contains NaN"),
        (dict(poses=_bad_pose()), "poses: .*frame 2.*not orthonormal"),
        (dict(depth=_neg_depth()), "depth: frame 1 has negative"),
        (dict(depth=_nan_depth()), "depth: frame 4 contains NaN"),
        (dict(actions=np.zeros(6, np.int64)), r"actions: expected shape \(T-1,\) = \(5,\)"),
        (dict(actions=np.array([0, 1, 2, 3, 0])), "actions: invalid action id 3 at index 3"),
        (dict(actions=np.zeros(5, np.int32)), "actions: expected dtype int64"),
        (dict(collided=np.zeros(6, bool)), r"collided: expected shape \(T-1,\)"),
        (dict(actions=None), "collided: given without actions"),
        (dict(intrinsics=intrinsics_from_fov(16, 16, 90.0)), "intrinsics: 16x16 .* does not match the frames' 16x12"),
        (dict(split="training"), "split: expected one of"),
        (dict(episode_id=""), "episode_id: must not be empty"),
        (dict(meta={"x": np.zeros(2)}), "meta: not JSON-serialisable"),
    ],
)
def test_validate_names_field_and_problem(change, pattern):
    with pytest.raises(EpisodeError, match=pattern):
        make_episode(**change).validate()


def test_error_carries_path_and_pickles(tmp_path):
    import pickle

    with pytest.raises(EpisodeError) as ei:
        make_episode(split="nope").validate(tmp_path / "x.npz")
    e = ei.value
    assert isinstance(e, ValueError) and e.path == tmp_path / "x.npz" and str(tmp_path) in str(e)
    e2 = pickle.loads(pickle.dumps(e))
    assert (e2.path, e2.code, str(e2)) == (e.path, e.code, str(e))


def test_no_actions_is_allowed():
    make_episode(actions=None, collided=None, kind="tum").validate()


def test_single_frame_episode():
    make_episode(T=1).validate()


def test_slice_keeps_action_rule():
    ep = make_episode(T=8)
    s = ep.slice(2, 6)
    assert s.num_frames == 4 and s.frame_offset == 2
    np.testing.assert_array_equal(s.actions, ep.actions[2:5])
    s.validate()
