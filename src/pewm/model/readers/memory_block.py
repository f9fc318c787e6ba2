"""The memory block every reader owns one of per transformer block (§3.3 of arXiv 2505.05495).

*Unverified* reconstruction of the paper's equation::

    s_H, b_H, a_M, s_F, b_F, a_H = AdaLN_video(t)          # expert AdaLN: video stream
    s_M, b_M                     = AdaLN_map(t)            # expert AdaLN: map stream
    H += a_M * Attn(q = W_q LN(H)(1+s_H)+b_H + W_c C,  kv = [null, LN(M)(1+s_M)+b_M])
    H += a_H * FF(LN(H)(1+s_F)+b_F)

``C`` is the mean-pooled Plücker ray of each token's patch (the "camera embedding" concatenated to
the video hidden states; a linear layer on a concatenation equals the sum of two linear maps).
The map stream is read, not updated, so it has no gate. Every AdaLN is zero-initialised, so adding
the memory blocks to a trained stage-1 model leaves its output exactly unchanged (stage 2 starts
from the stage-1 model). A learned null token per block keeps the attention defined when the
memory is empty or dropped (classifier-free guidance).

Parameter parity (the paper compares "equal parameter counts"): all readers own the *same* stack
of memory blocks; they differ only in a small tokenizer (<= 2% of the tiny model).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pewm.model.layers import AdaLNModulation, CrossAttention, MLP, gated_residual, modulate

# How a memory block starts as the identity (stage 2 must start from exactly the stage-1 model):
# "zero-gate" = AdaLN-Zero gates (0 at init; the attention and feed-forward get no gradient until
# the gates have moved), "zero-out" = gates at 1 and zero-initialised output projections of the
# attention and the feed-forward (every memory parameter behind them gets gradient from step 1).
MEMORY_INITS = ("zero-gate", "zero-out")


class MemoryBlock(nn.Module):
    """Cross-attention from video tokens to memory tokens with expert AdaLNs, then a feed-forward
    layer (§3.3). Exactly the identity at initialisation, by ``init`` (:data:`MEMORY_INITS`):

    - ``zero-gate`` (AdaLN-Zero, the paper's reading): the gates ``a_M``, ``a_H`` start at 0. The
      attention and feed-forward then get no gradient until the gates have moved, and the gates'
      own gradient is the correlation of a randomly initialised attention's output with the loss.
    - ``zero-out``: the gates start at 1 (their AdaLN bias) and the output projections of the
      attention and of the feed-forward start at 0; the projections get gradient from the first
      step (a linear read-out of the attention output), the rest as soon as they move.
    """

    def __init__(self, width: int, heads: int, cond_dim: int, mlp_ratio: float, cam_channels: int = 6,
                 init: str = "zero-gate"):
        super().__init__()
        self.ada_video = AdaLNModulation(cond_dim, width, 6)
        self.ada_map = AdaLNModulation(cond_dim, width, 2)
        self.norm_video = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.norm_map = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.norm_ff = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.cam = nn.Linear(cam_channels, width, bias=False)
        self.null = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.attn = CrossAttention(width, heads)
        self.ff = MLP(width, mlp_ratio)
        if init == "zero-out":
            with torch.no_grad():
                bias = self.ada_video.linear.bias.view(6, width)
                bias[2].fill_(1.0)  # a_M
                bias[5].fill_(1.0)  # a_H
                for lin in (self.attn.proj, self.ff.fc2):
                    lin.weight.zero_()
                    lin.bias.zero_()
        elif init not in MEMORY_INITS:
            raise ValueError(f"MemoryBlock: init must be one of {MEMORY_INITS}, got {init!r}")
        # pure-efficiency shortcut (pewm.model.layers.set_fast_paths): with the null token as the
        # only key the attention's output does not depend on the queries (see forward)
        self.fast_path = True

    def forward(self, x: torch.Tensor, c: torch.Tensor, cam: torch.Tensor, ctx,
                q_extra: torch.Tensor | None = None, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        """``ctx``: the reader's :class:`~pewm.model.readers.base.MemoryContext`; ``q_extra``
        ``(B, L, width)``: added to the queries beside the camera embedding; ``attn_bias``
        ``(B, L, N)``: added to the attention logits of the N map tokens (the null token gets 0)."""
        shift_h, scale_h, gate_m, shift_f, scale_f, gate_h = self.ada_video(c)
        shift_m, scale_m = self.ada_map(c)
        b = x.shape[0]
        if self.fast_path and ctx.null_only and not torch.is_grad_enabled():
            # Only the null token can be attended to (the voxel-render and none readers, a dropped
            # memory): the softmax over a single key is 1, so every query token reads the null
            # token's value; computed once per block and step instead of per query token (the
            # queries, camera embedding, q_extra and bias cannot change it). Not while training:
            # the query-side parameters must stay in the graph (DDP, AdamW's weight decay).
            mem = modulate(self.norm_map(self.null.expand(b, -1, -1).to(x.dtype).contiguous()), shift_m, scale_m)
            a = self.attn.single_key(mem, x.shape[1], 1 + ctx.tokens.shape[1])  # (B, 1, width): broadcast
        else:
            mem = torch.cat([self.null.expand(b, -1, -1).to(x.dtype), ctx.tokens.to(x.dtype)], dim=1)
            mem = modulate(self.norm_map(mem), shift_m, scale_m)
            q = modulate(self.norm_video(x), shift_h, scale_h)
            extra = self.cam(cam.to(x.dtype))
            if q_extra is not None:
                extra = extra + q_extra
            if ctx.cells is not None:  # each head reads its own cell's map tokens (cell_lists)
                index, valid, pair_k, pair_v = ctx.cells
                if ctx.mask.shape[1]:  # a dropped memory (CFG) masks its tokens
                    valid = valid & ctx.mask[:, None, None, :].expand(-1, index.shape[1], index.shape[2], -1).gather(
                        3, index.clamp_min(0))
                else:
                    valid = torch.zeros_like(valid)
                a = self.attn.gathered(q, mem, index + 1, valid, pair_k, pair_v, q_extra=extra)
            else:
                bias = None
                if attn_bias is not None:
                    bias = F.pad(attn_bias.to(x.dtype), (1, 0))  # the null token: no bias
                a = self.attn(q, mem, mask=ctx.attn_mask, q_extra=extra, bias=bias)
        x = gated_residual(x, gate_m, a)
        return gated_residual(x, gate_h, self.ff(modulate(self.norm_ff(x), shift_f, scale_f)))


__all__ = ["MEMORY_INITS", "MemoryBlock"]
