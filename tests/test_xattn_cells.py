"""``voxel-xattn`` with ``cell_tokens``: each head of a query reads the map tokens that cover its
latent cell (``pewm.model.readers.cell_lists``) through gathered cross-attention."""

import math

import numpy as np
import pytest
import torch

from pewm.model import MemoryBuilder, MemoryInput, from_preset
from pewm.model.layers import CrossAttention
from pewm.model.memory_build import MemoryBuildConfig
from pewm.model.readers import stack_memory
from pewm.model.readers.cell_lists import cell_token_lists, head_cells
from pewm.model.readers.voxel_xattn import VoxelXAttnOptions

import memory_scenes as scene

K64 = torch.tensor([[32.0, 0, 32], [0, 32.0, 32], [0, 0, 1]], dtype=torch.float64)  # 90 degrees at 64 px


def _wall(z: float, voxel: float = 0.1, half: float = 3.0) -> torch.Tensor:
    """Voxel centres of a wall facing the identity camera at depth ``z``."""
    s = torch.arange(-half, half + 1e-9, voxel, dtype=torch.float64)
    x, y = torch.meshgrid(s, s, indexing="xy")
    return torch.stack([x.reshape(-1), y.reshape(-1), torch.full((x.numel(),), z, dtype=torch.float64)], -1)


def test_each_cell_reads_the_surface_it_shows_and_not_what_it_hides():
    front, back = _wall(2.0), _wall(4.0)
    behind = torch.tensor([[0.0, 0.0, -1.0]], dtype=torch.float64)  # behind the camera
    centers = torch.cat([back, front, behind])
    lists = cell_token_lists(centers, torch.eye(4, dtype=torch.float64)[None], K64, (64, 64), (16, 16), 0.1, k=4)
    idx = lists.index[0]  # (cells, k)
    assert idx.shape == (256, 4)
    assert (idx[:, 0] >= 0).all(), "every cell of a view filled by a wall has a front token"
    rows = lists.tokens[idx[idx >= 0]]
    assert (rows >= len(back)).all() and (rows < len(back) + len(front)).all(), "only the front wall is read"
    geo = lists.geometry[0][idx >= 0]
    assert torch.allclose(geo[:, 0], torch.full_like(geo[:, 0], math.log(2.0)), atol=1e-5)
    # at 2 m a 0.1 m voxel spans 0.4 cells: a token's projection lies within reach of its cell centre
    assert geo[:, 1:].abs().max() <= 0.5 + 0.2 + 1e-5
    assert (lists.geometry[0][idx < 0] == 0).all()
    # the token rows referenced are distinct and numbered as in `tokens`
    assert lists.tokens.unique().numel() == lists.tokens.numel()
    assert int(idx.max()) == lists.tokens.numel() - 1


def test_cells_of_a_second_view_and_the_token_cap():
    front = _wall(2.0)
    moved = torch.eye(4, dtype=torch.float64)
    moved[2, 3] = 1.0  # one metre forward: the wall at 1 m
    views = torch.stack([torch.eye(4, dtype=torch.float64), moved])
    lists = cell_token_lists(front, views, K64, (64, 64), (16, 16), 0.1, k=2)
    g = lists.geometry
    assert torch.allclose(g[1][lists.index[1] >= 0][:, 0], torch.zeros(1, dtype=torch.float32), atol=1e-5)  # log 1
    n = lists.tokens.numel()
    capped = cell_token_lists(front, views, K64, (64, 64), (16, 16), 0.1, k=2, max_tokens=n // 3)
    assert capped.tokens.numel() == n // 3
    assert int(capped.index.max()) < n // 3
    # a cap keeps the tokens in front of some cell before second layers: every kept entry of
    # rank 0 survives as long as there is room for the rank-0 tokens
    rank0 = lists.tokens[lists.index[..., 0][lists.index[..., 0] >= 0]].unique()
    if rank0.numel() <= n // 3:
        kept = set(capped.tokens.tolist())
        assert set(rank0.tolist()) <= kept
    empty = cell_token_lists(torch.zeros(0, 3), views, K64, (64, 64), (16, 16), 0.1, k=2)
    assert (empty.index == -1).all() and empty.tokens.numel() == 0


def test_head_cells_follow_the_patchify_order():
    hc = head_cells((2, 3), patch=2, heads=6)  # 2 x 3 tokens, 4 x 6 cells
    # token (row 1, col 2) -> its block's cells (2..3) x (4..5); heads 0-3 row-major, 4-5 wrap
    assert hc[:, 1 * 3 + 2].tolist() == [2 * 6 + 4, 2 * 6 + 5, 3 * 6 + 4, 3 * 6 + 5, 2 * 6 + 4, 2 * 6 + 5]
    spread = head_cells((1, 1), patch=4, heads=2)  # fewer heads than cells: spread over the block
    assert spread[:, 0].tolist() == [0, 8]


@pytest.mark.parametrize("heads", [1, 2])
def test_gathered_attention_equals_masked_dense_attention(heads):
    torch.manual_seed(0)
    B, L, N, C, k = 2, 5, 7, 8, 3
    attn = CrossAttention(C, heads)
    q_in, kv_in = torch.randn(B, L, C), torch.randn(B, 1 + N, C)
    # distinct keys per query (cell lists never repeat a token), the same for every head
    index = torch.stack([torch.stack([torch.randperm(N)[:k] for _ in range(L)]) for _ in range(B)])
    valid = torch.rand(B, L, k) > 0.3
    dense = torch.full((B, L, 1 + N), float("-inf"))
    dense[..., 0] = 0.0  # the null token
    for b in range(B):
        for i in range(L):
            for j in range(k):
                if valid[b, i, j]:
                    dense[b, i, 1 + index[b, i, j]] = 0.0
    want = attn(q_in, kv_in, bias=dense)
    hi = (index + 1)[:, None].expand(B, heads, L, k)
    got = attn.gathered(q_in, kv_in, hi, valid[:, None].expand(B, heads, L, k))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_options_are_checked_with_their_names():
    with pytest.raises(ValueError, match="cell_tokens must be an integer >= 0"):
        VoxelXAttnOptions(cell_tokens=-1)
    with pytest.raises(ValueError, match="cell_token_cap must be an integer >= 1"):
        VoxelXAttnOptions(cell_tokens=2, cell_token_cap=0)
    with pytest.raises(ValueError, match="replaces ray_query and ray_bias"):
        VoxelXAttnOptions(cell_tokens=2, ray_bias=0.5)


def test_a_memory_built_from_frames_has_cell_lists_of_the_clip_views():
    cfg = from_preset("micro", reader="voxel-xattn", reader_options={"cell_tokens": 2, "cell_token_cap": 500})
    builder = MemoryBuilder(cfg, MemoryBuildConfig(extractor="rgb", feature_voxel=(0.1, 0.1, 0.1)))
    K = scene.intrinsics(64).matrix
    hist = [scene.pose(1.5, 1.5, yaw) for yaw in (0, 30, 60, 90)]
    rgb, depth, P = scene.frames(hist, K, 64, 64)
    targets = np.stack([scene.pose(1.5, 1.5, 30 + 10 * i) for i in range(cfg.frames)])
    mem = builder.from_history(rgb, depth, P, K, hist[1], targets)
    cells = cfg.frame_height * cfg.frame_width
    assert mem.cell_index.shape == (1, cfg.frames + 1, cells, 2)
    n = mem.tokens.shape[1]
    assert 0 < n <= 500 and bool(mem.mask.all())
    assert (mem.cell_index[..., 0] >= 0).float().mean() > 0.9, "views inside the seen room are covered"
    assert int(mem.cell_index.max()) < n
    # positions are in the current camera's frame: the walls of the room are in front, 1-5 m
    assert (mem.positions[0, :, 2] > -6).all() and (mem.positions.norm(dim=-1) < 8).all()
    # the model reads it (micro model, batch 1)
    from pewm.model import WorldModel
    m = WorldModel(cfg)
    ctx = m.denoiser.reader.prepare(mem, 1, torch.device("cpu"))
    assert ctx.cells[0].shape == (1, cfg.heads, (cfg.frames + 1) * cfg.tokens_per_frame, 2)
    with pytest.raises(ValueError, match="needs MemoryInput.cell_index"):
        m.denoiser.reader.prepare(MemoryInput(tokens=mem.tokens, positions=mem.positions), 1, "cpu")
    with pytest.raises(ValueError, match="cell_index must be long rows"):
        bad = MemoryInput(tokens=mem.tokens, positions=mem.positions, cell_index=mem.cell_index + n,
                          cell_geometry=mem.cell_geometry)
        m.denoiser.reader.prepare(bad, 1, "cpu")


def test_stacking_memories_pads_their_tokens():
    a = MemoryInput(tokens=torch.ones(1, 3, 4), positions=torch.ones(1, 3, 3))
    b = MemoryInput(tokens=torch.ones(1, 5, 4), positions=torch.ones(1, 5, 3), mask=torch.ones(1, 5, dtype=torch.bool))
    s = stack_memory([a, b])
    assert s.tokens.shape == (2, 5, 4) and s.positions.shape == (2, 5, 3)
    assert s.mask.tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert (s.tokens[0, 3:] == 0).all()
