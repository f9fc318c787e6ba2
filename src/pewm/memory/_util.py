"""Small tensor helpers shared by the memory modules (image layouts, sorting, devices)."""

from __future__ import annotations

import numpy as np
import torch


def as_tensor(x, device=None, dtype=None) -> torch.Tensor:
    """``x`` (tensor, array or nested list) as a tensor on ``device`` with ``dtype``."""
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(device=device if device is not None else t.device, dtype=dtype or t.dtype)


def rgb_to_bchw_float(rgb, device=None) -> torch.Tensor:
    """Images in any accepted layout as ``(B, 3, H, W)`` float32 in ``[0, 1]``.

    Accepted: ``uint8`` ``(B, H, W, 3)`` or ``(H, W, 3)`` (the simulator's and datasets' layout),
    float ``(B, 3, H, W)`` or ``(3, H, W)`` in ``[0, 1]`` (the model's layout). Channel-last float
    and channel-first uint8 are recognised by where the size-3 axis is (channel-first wins when both
    ``shape[-3]`` and ``shape[-1]`` are 3).
    """
    if isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and (device is None or torch.device(device).type == "cpu"):
        # uint8 (B, H, W, 3) from the simulator: convert in NumPy (single-threaded, no torch dispatch;
        # same float32 values as ``x.float() / 255``), then a channel-first view
        a = rgb[None] if rgb.ndim == 3 else rgb
        if a.ndim == 4 and a.shape[-1] == 3 and a.shape[1] != 3:
            f = np.empty((a.shape[0], 3, a.shape[1], a.shape[2]), dtype=np.float32)
            np.divide(a.transpose(0, 3, 1, 2), np.float32(255.0), out=f, dtype=np.float32)
            return torch.from_numpy(f)
    x = as_tensor(rgb, device=device)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"rgb must be (B,3,H,W), (B,H,W,3), (3,H,W) or (H,W,3); got shape {tuple(x.shape)}")
    channel_first = x.shape[1] == 3
    if not channel_first:
        if x.shape[-1] != 3:
            raise ValueError(f"rgb must have 3 channels (first or last axis); got shape {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2)
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif not x.is_floating_point():
        raise ValueError(f"rgb must be uint8 or float, got {x.dtype}")
    else:
        x = x.float()
    return x


def unique_sorted(keys: torch.Tensor) -> torch.Tensor:
    """Sorted unique values of a 1-D int64 tensor.

    On CPU this uses NumPy's radix sort (about 100x faster than ``torch.sort`` for int64 on CPU in
    torch 2.x, measured in ``benchmarks/memory_throughput.py``); on other devices ``torch.unique``.
    """
    if keys.numel() == 0:
        return keys
    if keys.device.type == "cpu":
        s = np.sort(keys.numpy())
        keep = np.empty(len(s), dtype=bool)
        keep[0] = True
        np.not_equal(s[1:], s[:-1], out=keep[1:])
        return torch.from_numpy(s[keep])
    return torch.unique(keys, sorted=True)
