"""Clip sampling for training: frame layout, history before the clip, revisit-weighted sampling."""

import numpy as np
import pytest

from pewm.data.clips import ClipConfig, ClipSampler


@pytest.fixture(scope="module")
def sampler(small_dataset):
    path, _ = small_dataset
    return ClipSampler(path, split=None, cfg=ClipConfig(future_frames=4, strides=(1, 2, 3), history=6))


def test_clip_frames_follow_the_stride_and_history_excludes_targets(sampler):
    rng = np.random.default_rng(0)
    seen_strides = set()
    for _ in range(30):
        c = sampler.sample(rng)
        f = c.frame_indices
        assert len(f) == 5 and c.rgb.shape[0] == 5 and c.depth.shape[0] == 5 and c.poses.shape == (5, 4, 4)
        stride = int(f[1] - f[0])
        seen_strides.add(stride)
        assert np.all(np.diff(f) == stride)
        ep = sampler.episodes[c.episode].ep
        np.testing.assert_array_equal(c.rgb, ep.rgb[f])
        np.testing.assert_array_equal(c.poses, ep.poses[f])
        # the history is ground truth from [0, t0], ends at the current frame, never a target
        assert 1 <= len(c.history_poses) <= 6
        hist_idx = [int(np.flatnonzero((ep.poses == p).all(axis=(1, 2)))[0]) for p in c.history_poses]
        assert max(hist_idx) <= f[0]
        np.testing.assert_array_equal(c.history_rgb[-1], ep.rgb[f[0]])
    assert seen_strides == {1, 2, 3}


def test_revisit_share_matches_its_definition_and_weights_favour_revisits(sampler):
    stats = sampler.revisit_share_stats()
    assert 0.0 < stats["uniform_mean_share"] < 1.0
    assert stats["sampled_mean_share"] > stats["uniform_mean_share"]
    # recompute one candidate's share by brute force
    e, t0, s = (int(v) for v in sampler.candidates[len(sampler.candidates) // 2])
    fs = sampler.episodes[e].first_seen
    targets = [t0 + s * k for k in range(1, 5)]
    expected = np.mean([[fs[t, p] <= t0 for p in range(fs.shape[1])] for t in targets])
    assert sampler.clip(e, t0, s).revisit_share == pytest.approx(expected)


def test_first_seen_is_monotone_in_time(sampler):
    fs = sampler.episodes[0].first_seen
    T = fs.shape[0]
    # a pixel's voxel cannot have been first seen after the frame that shows it
    assert np.all((fs <= np.arange(T)[:, None]) | (fs == T))


def test_sampling_is_deterministic_and_errors_are_clear(small_dataset, sampler):
    a = sampler.sample(np.random.default_rng(5))
    b = sampler.sample(np.random.default_rng(5))
    np.testing.assert_array_equal(a.frame_indices, b.frame_indices)
    path, _ = small_dataset
    with pytest.raises(ValueError, match="shorter than a clip"):
        ClipSampler(path, split=None, cfg=ClipConfig(future_frames=30, strides=(3,)))
    with pytest.raises(ValueError, match="split must be one of"):
        ClipSampler(path, split="nonexistent")
    with pytest.raises(ValueError, match="no episodes in split 'train'"):
        ClipSampler(path, split="train", max_episodes=0)
