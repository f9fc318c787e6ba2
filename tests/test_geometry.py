"""Geometry conventions: intrinsics, poses, projection, Plücker rays and action kinematics."""

import math

import numpy as np
import pytest
import torch

from pewm.geometry import (
    Action,
    ActionConfig,
    AgentState,
    Intrinsics,
    apply_action,
    camera_pose_from_agent,
    camera_rotation_from_heading,
    check_pose,
    heading_of_pose,
    intrinsics_from_fov,
    invert_pose,
    make_pose,
    matrix_to_quaternion,
    plucker_rays,
    poses_from_actions,
    project_points,
    quaternion_to_matrix,
    relative_pose,
    unproject_depth,
)


def random_pose(rng):
    q = rng.normal(size=4)
    return make_pose(quaternion_to_matrix(q), rng.normal(size=3))


def test_intrinsics_from_fov_centre_and_fov():
    intr = intrinsics_from_fov(64, 48, 60.0)
    assert intr.cx == pytest.approx(31.5) and intr.cy == pytest.approx(23.5)
    assert intr.fov_y_deg == pytest.approx(60.0)
    assert intr.fx == intr.fy
    with pytest.raises(ValueError, match="fov_y_deg"):
        intrinsics_from_fov(64, 64, 180.0)


def test_intrinsics_scaled_keeps_field_of_view_and_centre():
    intr = intrinsics_from_fov(64, 64, 90.0).scaled(128, 128)
    assert intr.fov_y_deg == pytest.approx(90.0)
    assert intr.cx == pytest.approx(63.5)
    assert Intrinsics.from_dict(intr.to_dict()) == intr


def test_intrinsics_check_image_names_the_shape():
    intr = intrinsics_from_fov(64, 64, 90.0)
    intr.check_image((10, 64, 64, 3))
    intr.check_image((64, 64))
    with pytest.raises(ValueError, match="32, 64"):
        intr.check_image((32, 64), what="depth")


def test_camera_axes_follow_opencv_with_world_z_up():
    R = camera_rotation_from_heading(0.0)
    np.testing.assert_allclose(R[:, 2], [1, 0, 0], atol=1e-12)  # forward = +x at yaw 0
    np.testing.assert_allclose(R[:, 0], [0, -1, 0], atol=1e-12)  # right = -y (y points left)
    np.testing.assert_allclose(R[:, 1], [0, 0, -1], atol=1e-12)  # image down = world down
    for yaw, pitch in [(0.3, 0.0), (-2.0, 0.2), (3.0, -0.4)]:
        T = check_pose(camera_pose_from_agent(1.0, 2.0, yaw, 1.25, pitch))
        assert heading_of_pose(T) == pytest.approx(yaw)


def test_pose_inverse_relative_and_quaternion_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(10):
        A, B = random_pose(rng), random_pose(rng)
        np.testing.assert_allclose(invert_pose(A) @ A, np.eye(4), atol=1e-12)
        np.testing.assert_allclose(A @ relative_pose(A, B), B, atol=1e-12)
        q = matrix_to_quaternion(A[:3, :3])
        np.testing.assert_allclose(quaternion_to_matrix(q), A[:3, :3], atol=1e-12)


def test_check_pose_rejects_bad_matrices():
    with pytest.raises(ValueError, match="shape"):
        check_pose(np.eye(3))
    bad = np.eye(4)
    bad[0, 0] = 2.0
    with pytest.raises(ValueError, match="orthonormal"):
        check_pose(bad)
    refl = np.diag([1.0, 1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="reflection"):
        check_pose(refl)
    nan = np.eye(4)
    nan[0, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        check_pose(nan)


def test_unproject_then_project_returns_pixel_and_depth():
    intr = intrinsics_from_fov(16, 12, 70.0)
    T = camera_pose_from_agent(0.5, -1.0, 0.7, 1.2, 0.1)
    depth = torch.rand(12, 16) * 4 + 0.5
    pts = unproject_depth(depth, intr.matrix, T)
    uv, z = project_points(pts.reshape(-1, 3), intr.matrix, T)
    v, u = torch.meshgrid(torch.arange(12.0), torch.arange(16.0), indexing="ij")
    torch.testing.assert_close(uv, torch.stack([u, v], -1).reshape(-1, 2), atol=1e-3, rtol=0)
    torch.testing.assert_close(z, depth.reshape(-1), atol=1e-4, rtol=1e-5)


def test_depth_is_z_depth_not_ray_length():
    intr = intrinsics_from_fov(9, 9, 90.0)
    pts = unproject_depth(torch.full((9, 9), 2.0), intr.matrix, np.eye(4))
    assert torch.allclose(pts[..., 2], torch.tensor(2.0))  # camera = world here: z equals the depth everywhere
    corner_len = pts[0, 0].norm()
    assert corner_len > 2.0  # the corner ray is longer than its z-depth


def test_plucker_properties():
    intr = intrinsics_from_fov(8, 6, 80.0)
    T = torch.tensor(camera_pose_from_agent(1.5, -0.5, 0.4, 1.25, 0.2), dtype=torch.float32)
    P = plucker_rays(intr.matrix, T, 6, 8)
    assert P.dtype == torch.float32
    assert P.shape == (6, 6, 8)
    m, d = P[:3].reshape(3, -1).T, P[3:].reshape(3, -1).T
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(48))
    torch.testing.assert_close((m * d).sum(-1), torch.zeros(48), atol=1e-5, rtol=0)
    o = T[:3, 3]
    for s in (0.5, 3.0):  # the moment is the same for every point on the ray
        p = o + s * d
        torch.testing.assert_close(torch.cross(p, d, dim=-1), m, atol=1e-5, rtol=0)
    # the centre pixel's direction is the camera's forward axis (odd-sized image)
    P2 = plucker_rays(intrinsics_from_fov(7, 7, 60).matrix, T, 7, 7)
    torch.testing.assert_close(P2[3:, 3, 3], T[:3, 2], atol=1e-6, rtol=0)
    # a camera at the origin has zero moments; batched input works
    Pb = plucker_rays(intr.matrix, torch.stack([torch.eye(4), T]), 6, 8)
    assert Pb.shape == (2, 6, 6, 8) and Pb[0, :3].abs().max() == 0


def test_actions_move_along_heading_and_turn_left_is_ccw():
    cfg = ActionConfig(forward_m=0.25, turn_deg=15.0)
    s = AgentState(0.0, 0.0, math.pi / 2)
    f = apply_action(s, Action.FORWARD, cfg)
    assert (f.x, f.y) == pytest.approx((0.0, 0.25))
    assert apply_action(s, Action.TURN_LEFT, cfg).yaw == pytest.approx(math.pi / 2 + math.radians(15))
    assert apply_action(s, Action.TURN_RIGHT, cfg).yaw == pytest.approx(math.pi / 2 - math.radians(15))


def test_action_t_leads_from_pose_t_to_pose_t_plus_1():
    """poses_from_actions(start, a)[t + 1] is the pose after a[t], matching per-state kinematics."""
    rng = np.random.default_rng(1)
    actions = rng.integers(0, 3, size=40)
    state = AgentState(1.0, 2.0, 0.3)
    poses = poses_from_actions(state.camera_pose(1.25), actions)
    assert poses.shape == (41, 4, 4)
    for t, a in enumerate(actions):
        np.testing.assert_allclose(poses[t], state.camera_pose(1.25), atol=1e-9)
        state = apply_action(state, int(a))
    np.testing.assert_allclose(poses[-1], state.camera_pose(1.25), atol=1e-9)


def test_full_turn_and_inverse_actions_return_to_start():
    T = camera_pose_from_agent(0.0, 0.0, 0.1, 1.25, 0.15)
    np.testing.assert_allclose(poses_from_actions(T, [Action.TURN_LEFT] * 24)[-1], T, atol=1e-9)
    np.testing.assert_allclose(poses_from_actions(T, [1, 2, 2, 1])[-1], T, atol=1e-12)
    # forward keeps camera height and pitch even when the camera looks down
    after = poses_from_actions(T, [0, 0])[-1]
    assert after[2, 3] == pytest.approx(1.25)
    np.testing.assert_allclose(after[:3, :3], T[:3, :3], atol=1e-12)
    assert np.linalg.norm(after[:2, 3] - T[:2, 3]) == pytest.approx(0.5)


def test_invalid_action_ids_are_named():
    with pytest.raises(ValueError, match="invalid action id 7 at index 2"):
        Action.check([0, 1, 7])
    with pytest.raises(ValueError, match="invalid action id -1"):
        poses_from_actions(np.eye(4), [-1])


def test_actions_from_poses_recovers_the_actions_of_a_path():
    from pewm.geometry import actions_from_poses

    start = camera_pose_from_agent(1.0, 2.0, 0.3, 1.25, math.radians(-10.0))
    acts = np.array([0, 1, 1, 0, 2, 0, 0])
    P = poses_from_actions(start, acts)
    assert np.array_equal(actions_from_poses(P), acts)
    assert actions_from_poses(P[:1]).shape == (0,)
    moved = P.copy()
    moved[3, 0, 3] += 1e-4  # off the action lattice: a recording
    assert actions_from_poses(moved) is None
    assert actions_from_poses(np.stack([start, start])) is None  # standing still is no action
    with pytest.raises(ValueError, match=r"\(T \+ 1, 4, 4\)"):
        actions_from_poses(np.eye(4))
