"""Top-down picture orientation and the ``pewm map`` command."""

from __future__ import annotations

import numpy as np
import pytest

import memory_scenes as S
from pewm.memory import PersistentMap, VoxelMap, VoxelMapConfig, map_top_down_image


def test_top_down_orientation():
    m = VoxelMap(VoxelMapConfig.surface(0.1))
    # two coloured patches: red at high y (should be at the top), blue at high x (right)
    K = np.array([[10.0, 0, 4.5], [0, 10.0, 4.5], [0, 0, 1]])
    down = np.array([[1.0, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 0], [0, 0, 0, 1]])  # looking straight down
    for (x, y, c) in [(0.0, 5.0, (255, 0, 0)), (5.0, 0.0, (0, 0, 255))]:
        T = down.copy()
        T[:3, 3] = (x, y, 2.0)
        rgb = np.zeros((1, 10, 10, 3), np.uint8) + np.array(c, np.uint8)
        m.integrate(rgb, np.full((1, 10, 10), 2.0, np.float32), K, T[None])
    img = map_top_down_image(m, px_per_m=10)
    assert img.dtype == np.uint8 and img.ndim == 3
    red = np.argwhere((img[..., 0] > 200) & (img[..., 2] < 50))
    blue = np.argwhere((img[..., 2] > 200) & (img[..., 0] < 50))
    assert red[:, 0].mean() < blue[:, 0].mean()  # +y up
    assert blue[:, 1].mean() > red[:, 1].mean()  # +x right
    assert map_top_down_image(m, px_per_m=10, mode="height").shape == img.shape


def test_map_command(tmp_path):
    import typer
    from typer.testing import CliRunner

    from pewm import data

    from pewm.cli.map_cmd import register

    intr = S.intrinsics(32)
    rgb, depth, P = S.frames(S.look_around(1.5, 1.5, 6), intr.matrix, 32, 32)
    ds = data.create_dataset(tmp_path / "ds", data.DatasetSpec(name="box", intrinsics=intr, action_config=None))
    ds.write(0, data.Episode.create(rgb, depth, P, None, intr))
    app = typer.Typer()
    register(app)

    @app.command()
    def _other() -> None:  # a second command keeps typer in multi-command mode
        pass

    res = CliRunner().invoke(app, ["map", str(tmp_path / "ds"), "--episode", "0", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    for f in ("map.ply", "map_topdown.png", "map.safetensors"):
        assert (tmp_path / "out" / f).is_file()
    pm = PersistentMap.load(tmp_path / "out" / "map.safetensors")
    assert len(pm) > 0 and len(pm.surface) > 0 and "voxels" in res.stderr  # messages go to stderr
    out = pm.render(intr.matrix, P[0], 32, 32)
    assert out.mask.float().mean() > 0.9
