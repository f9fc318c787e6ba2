"""Image-memory baseline: retrieval by frustum overlap, not pose distance."""

from __future__ import annotations

import numpy as np
import torch

import memory_scenes as S
from pewm.memory import FrameMemory, FrameMemoryConfig


def _memory(poses, depth_test=False):
    K = S.intrinsics(32).matrix
    rgb, depth, P = S.frames(poses, K, 32, 32)
    fm = FrameMemory(FrameMemoryConfig(sample_stride=4, depth_test=depth_test))
    fm.add(rgb, depth, K, P)
    return fm, K


def test_same_direction_beats_closer_frame_looking_away():
    target = S.pose(1.5, 1.5, 0.0)
    same_dir_far = S.pose(0.6, 1.8, 5.0)  # 0.95 m away, looking the same way
    close_away = S.pose(1.6, 1.5, 180.0)  # 0.1 m away, looking back
    for depth_test in (False, True):
        fm, K = _memory([close_away, same_dir_far], depth_test)
        r = fm.retrieve(target, k=2)
        assert r.indices.tolist() == [1, 0]
        assert r.scores[0] > 0.3 and r.scores[1] < 0.1
        assert r.rgb.shape == (2, 3, 32, 32) and r.poses.shape == (2, 4, 4)


def test_scores_and_capacity():
    fm, K = _memory(S.look_around(1.5, 1.5, 8))
    sc = fm.overlap(np.stack([S.pose(1.5, 1.5, 0.0), S.pose(1.5, 1.5, 90.0)]))
    assert sc.shape == (8, 2)
    assert int(sc[:, 0].argmax()) == 0 and int(sc[:, 1].argmax()) == 2
    assert torch.allclose(sc[0, 0], torch.tensor(1.0))
    fm2 = FrameMemory(FrameMemoryConfig(capacity=3))
    rgb, depth, P = S.frames(S.look_around(1.5, 1.5, 5), K, 32, 32)
    fm2.add(rgb, depth, K, P)
    assert len(fm2) == 3 and fm2.retrieve(P[4], k=1).steps.tolist() == [4]
