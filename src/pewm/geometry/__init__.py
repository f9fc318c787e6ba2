"""Camera geometry shared by every pewm package (knows nothing above it)."""

from pewm.geometry.camera import Intrinsics, intrinsics_from_fov, intrinsics_matrix
from pewm.geometry.consistency import reprojection_depth_errors
from pewm.geometry.kinematics import (
    Action,
    ActionConfig,
    AgentState,
    action_transform,
    actions_from_poses,
    apply_action,
    poses_from_actions,
    wrap_angle,
)
from pewm.geometry.plucker import plucker_rays
from pewm.geometry.projection import camera_rays, pixel_grid, project_points, unproject_depth, valid_depth
from pewm.geometry.transforms import (
    camera_pose_from_agent,
    camera_rotation_from_heading,
    check_pose,
    heading_of_pose,
    invert_pose,
    make_pose,
    matrix_to_quaternion,
    quaternion_to_matrix,
    relative_pose,
)

__all__ = [
    "Action",
    "ActionConfig",
    "AgentState",
    "Intrinsics",
    "action_transform",
    "actions_from_poses",
    "apply_action",
    "camera_pose_from_agent",
    "camera_rays",
    "camera_rotation_from_heading",
    "check_pose",
    "heading_of_pose",
    "intrinsics_from_fov",
    "intrinsics_matrix",
    "invert_pose",
    "make_pose",
    "matrix_to_quaternion",
    "pixel_grid",
    "plucker_rays",
    "poses_from_actions",
    "project_points",
    "quaternion_to_matrix",
    "reprojection_depth_errors",
    "relative_pose",
    "unproject_depth",
    "valid_depth",
    "wrap_angle",
]
