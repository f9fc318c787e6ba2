"""Depth and RGB normalisation invert exactly within range (metres in, metres out)."""

import math

import pytest
import torch

from pewm.model import denormalize_depth, denormalize_rgb, normalize_depth, normalize_rgb


def test_depth_round_trip_within_range_is_exact():
    d = torch.logspace(math.log10(0.1), math.log10(20.0), 1001, dtype=torch.float64)
    n = normalize_depth(d, 0.1, 20.0)
    assert n.min() >= -1 and n.max() <= 1
    assert n[0].item() == pytest.approx(-1.0) and n[-1].item() == pytest.approx(1.0)
    back = denormalize_depth(n, 0.1, 20.0)
    torch.testing.assert_close(back, d, rtol=1e-12, atol=0)
    d32 = torch.rand(64, 64) * 19.9 + 0.1
    torch.testing.assert_close(denormalize_depth(normalize_depth(d32, 0.1, 20.0), 0.1, 20.0), d32, rtol=2e-6, atol=0)


def test_depth_is_monotonic_clamped_and_invalid_reads_far():
    d = torch.tensor([0.0, -1.0, float("nan"), float("inf"), 0.05, 0.1, 1.0, 20.0, 100.0])
    n = normalize_depth(d, 0.1, 20.0)
    assert torch.equal(n[:4], torch.ones(4)), "no measurement / invalid -> far (+1)"
    assert n[4] == -1 and n[5] == -1 and n[7] == 1 and n[8] == 1
    assert -1 < n[6] < 1
    torch.testing.assert_close(denormalize_depth(torch.tensor([-5.0, 5.0]), 0.1, 20.0), torch.tensor([0.1, 20.0]))
    with pytest.raises(ValueError, match="d_min"):
        normalize_depth(d, 2.0, 1.0)


def test_rgb_round_trip():
    x = torch.rand(3, 8, 8)
    torch.testing.assert_close(denormalize_rgb(normalize_rgb(x)), x)
    assert normalize_rgb(torch.tensor([0.0, 1.0])).tolist() == [-1.0, 1.0]
