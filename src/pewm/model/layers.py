"""Transformer building blocks shared by the denoiser and the memory blocks.

Sinusoidal embeddings (timestep, 2D patch grid, frame index, 3D map positions), AdaLN modulation
(DiT, Peebles & Xie 2023, used by CogVideoX which the paper fine-tunes, §3.1), multi-head
attention on ``torch.nn.functional.scaled_dot_product_attention`` and the feed-forward layer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sincos_1d(pos: torch.Tensor, dim: int, max_period: float = 10000.0, min_period: float | None = None) -> torch.Tensor:
    """Sinusoidal embedding ``(..., dim)`` of real positions ``pos`` (``dim`` even).

    With ``min_period=None`` the frequencies run from 1 to ``1/max_period`` (DDPM/DiT timestep
    embedding); otherwise the periods run geometrically from ``min_period`` to ``max_period``.
    """
    if dim % 2:
        raise ValueError(f"sincos_1d: dim must be even, got {dim}")
    half = dim // 2
    k = torch.arange(half, device=pos.device, dtype=torch.float32)
    if min_period is None:  # DDPM/DiT timestep convention: frequencies 1 ... 1/max_period
        freqs = torch.exp(-math.log(max_period) * k / half)
    else:  # periods geometric from min_period to max_period
        periods = min_period * (max_period / min_period) ** (k / max(half - 1, 1))
        freqs = 2 * math.pi / periods
    args = pos.float()[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def sincos_2d_grid(rows: int, cols: int, dim: int) -> torch.Tensor:
    """Fixed 2D position embedding ``(rows * cols, dim)`` of a patch grid (half rows, half cols)."""
    if dim % 4:
        raise ValueError(f"sincos_2d_grid: dim must be divisible by 4, got {dim}")
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    return torch.cat([sincos_1d(r.reshape(-1), dim // 2, 100.0), sincos_1d(c.reshape(-1), dim // 2, 100.0)], dim=-1)


def sincos_3d(points: torch.Tensor, dim: int, min_period: float = 0.25, max_period: float = 100.0) -> torch.Tensor:
    """3D sinusoidal position embedding ``(..., dim)`` of points in metres (§3.3 "3D sinusoidal
    absolute position embedding" of each map token). ``dim / 3`` channels per axis; periods from
    ``min_period`` (the paper's 0.25 m voxel) to ``max_period`` metres."""
    if dim % 6:
        raise ValueError(f"sincos_3d: dim must be divisible by 6, got {dim}")
    per = dim // 3
    return torch.cat([sincos_1d(points[..., i], per, max_period, min_period) for i in range(3)], dim=-1)


class TimestepEmbedding(nn.Module):
    """Diffusion timestep -> conditioning vector: sinusoid then a 2-layer MLP (DiT, §3.1)."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sincos_1d(t.float(), self.freq_dim).to(self.mlp[0].weight.dtype))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """AdaLN: ``x * (1 + scale) + shift`` with per-sample ``(B, C)`` shift and scale."""
    return torch.addcmul(shift[:, None], x, 1 + scale[:, None])


def gated_residual(x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x + gate * y`` with a per-sample ``(B, C)`` gate (AdaLN-Zero residual); one fused op."""
    return torch.addcmul(x, gate[:, None], y)


class AdaLNModulation(nn.Module):
    """Regress ``n`` per-channel vectors (shift/scale/gate) from the conditioning vector.

    Zero-initialised (AdaLN-Zero): every gate starts at 0, so the residual branch it gates is
    exactly switched off at initialisation.
    """

    def __init__(self, cond_dim: int, width: int, n: int):
        super().__init__()
        self.n = n
        self.linear = nn.Linear(cond_dim, n * width)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.linear(F.silu(c)).chunk(self.n, dim=-1)


class MLP(nn.Module):
    def __init__(self, width: int, ratio: float):
        super().__init__()
        hidden = int(round(width * ratio))
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)
        self.fast_path = True  # set_fast_paths: GELU in place when there is no autograd

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        if h.requires_grad or not self.fast_path:
            return self.fc2(F.gelu(h))  # exact GELU: 4x faster than the tanh form on CPU
        # without autograd, in place (same kernel, same bits): no second (L, hidden) buffer to
        # allocate and stream through the caches; ~8% of a tiny denoiser forward on this CPU
        return self.fc2(torch.ops.aten.gelu_(h))


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


class SelfAttention(nn.Module):
    """Multi-head self-attention over ``(B, N, C)`` tokens (SDPA), with QK RMS-norm for stability."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.q_norm = nn.RMSNorm(width // heads, eps=1e-6)
        self.k_norm = nn.RMSNorm(width // heads, eps=1e-6)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)
        return self.proj(o.transpose(1, 2).reshape(b, n, c))


# rows the single-key shortcut projects (see CrossAttention.single_key)
SINGLE_KEY_ROWS = 8


class CrossAttention(nn.Module):
    """Multi-head cross-attention from queries ``(B, L, C)`` to keys/values ``(B, N, C)``.

    ``mask`` (``(B, N)`` bool, True = attend) must leave at least one key per row (the memory
    blocks always prepend a learned null token).
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.q_norm = nn.RMSNorm(width // heads, eps=1e-6)
        self.k_norm = nn.RMSNorm(width // heads, eps=1e-6)
        self.proj = nn.Linear(width, width)

    def forward(
        self, q_in: torch.Tensor, kv_in: torch.Tensor, mask: torch.Tensor | None = None, q_extra: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``q_extra`` (``(B, L, C)``) is added to the projected queries (e.g. a camera embedding);
        ``bias`` (``(B, L, N)``) to the attention logits of every head."""
        b, l, c = q_in.shape
        n = kv_in.shape[1]
        q = self.q(q_in)
        if q_extra is not None:
            q = q + q_extra
        q = _heads(q, self.heads)
        k, v = self.kv(kv_in).view(b, n, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn_mask = None if mask is None else mask[:, None, None, :]
        if bias is not None:
            b_ = bias[:, None].to(q.dtype)
            attn_mask = b_ if attn_mask is None else b_.masked_fill(~attn_mask, float("-inf"))
        o = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v, attn_mask=attn_mask)
        return self.proj(o.transpose(1, 2).reshape(b, l, c))

    def gathered(
        self, q_in: torch.Tensor, kv_in: torch.Tensor, index: torch.Tensor, valid: torch.Tensor,
        pair_k: torch.Tensor | None = None, pair_v: torch.Tensor | None = None, q_extra: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Each head of each query attends to key 0 of ``kv_in`` (the null token, always) and to its
        own ``k`` keys ``index`` ``(B, heads, L, k)`` (rows of ``kv_in``, ``valid`` ``(B, heads, L, k)``
        bool), instead of to every key: :meth:`forward` with all other keys masked, at the cost of
        ``k + 1`` keys per query. ``pair_k`` / ``pair_v`` ``(B, heads, L, k, head_dim)`` are added to
        the gathered keys (after their norm) and values: relative positions of each pair (Shaw et al.
        2018)."""
        b, l, c = q_in.shape
        h, n = self.heads, kv_in.shape[1]
        hd = c // h
        q = self.q(q_in)
        if q_extra is not None:
            q = q + q_extra
        q = self.q_norm(_heads(q, h))  # (B, h, L, hd)
        k, v = self.kv(kv_in).view(b, n, 2, h, hd).permute(2, 0, 3, 1, 4)  # (B, h, N, hd) each
        k = self.k_norm(k)
        kk = index.shape[-1]
        flat = index.clamp(0, n - 1).reshape(b, h, l * kk, 1).expand(-1, -1, -1, hd)
        ks = k.gather(2, flat).view(b, h, l, kk, hd)
        vs = v.gather(2, flat).view(b, h, l, kk, hd)
        if pair_k is not None:
            ks = ks + pair_k.to(ks.dtype)
        if pair_v is not None:
            vs = vs + pair_v.to(vs.dtype)
        scale = hd ** -0.5
        logits = torch.einsum("bhld,bhlkd->bhlk", q, ks) * scale
        logits = logits.masked_fill(~valid, float("-inf"))
        null = (q * k[:, :, :1]).sum(-1, keepdim=True) * scale  # (B, h, L, 1)
        w = torch.softmax(torch.cat([null, logits], dim=-1), dim=-1)
        o = w[..., :1] * v[:, :, :1] + torch.einsum("bhlk,bhlkd->bhld", w[..., 1:], vs)
        return self.proj(o.transpose(1, 2).reshape(b, l, c))

    def single_key(self, kv_in: torch.Tensor, queries: int, keys: int = 1) -> torch.Tensor:
        """:meth:`forward`'s output for ``queries`` query tokens when the only key they can attend
        to is ``kv_in`` ``(B, 1, C)`` (alone, or the first of ``keys`` keys whose others the mask
        excludes): the softmax then puts weight 1 on it, so every query reads its value whatever
        the query (or a finite bias). Returns ``(B, 1, C)``, which broadcasts over the queries.

        The projections run on as many identical rows as :meth:`forward` would give them (``keys``
        for the key/value one, ``queries`` for the output one), at most :data:`SINGLE_KEY_ROWS`:
        BLAS libraries send a single row through a matrix-vector kernel that rounds differently
        from their matrix kernel, whose rows do not depend on how many there are; so the result is
        equal to :meth:`forward` within float rounding, and bit for bit on AVX2 CPUs (AVX-512
        kernels differ by about 2e-7; ``tests/test_fast_paths.py``)."""
        b, n, c = kv_in.shape
        if n != 1:
            raise ValueError(f"CrossAttention.single_key needs exactly one key, got {n}")

        def rows(x: torch.Tensor, like: int) -> torch.Tensor:
            return x.expand(b, max(1, min(SINGLE_KEY_ROWS, int(like))), c).contiguous()

        v = self.kv(rows(kv_in, keys))[:, :1].view(b, 1, 2, c)[:, :, 1]  # the value, heads concatenated
        return self.proj(rows(v, queries))[:, :1]


def set_fast_paths(module: nn.Module, enabled: bool) -> None:
    """Switch the pure-efficiency shortcuts of every submodule of ``module`` that has one (a
    ``fast_path`` attribute: the memory blocks' single-key cross-attention, the denoiser's cache of
    its ray embedding, the feed-forward layers' in-place GELU; all only without autograd) on or
    off. Off runs the general path, the code as it was before #14, for comparisons and benchmarks;
    outputs agree within float rounding, bit for bit on AVX2 CPUs (``tests/test_fast_paths.py``)."""
    for m in module.modules():
        if hasattr(m, "fast_path"):
            m.fast_path = bool(enabled)
