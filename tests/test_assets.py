"""The shipped default model: present in the package, small enough, loadable, and it generates."""

import numpy as np
import torch

from pewm.assets import DEFAULT_MODEL, default_model_dir, load_model, resolve_model_path
from pewm.geometry import camera_pose_from_agent, intrinsics_from_fov
from pewm.model import SamplingConfig
from pewm.model.testing import torch_threads


def test_shipped_model_is_in_the_package_and_small():
    d = default_model_dir()
    assert d.name == DEFAULT_MODEL and resolve_model_path(None) == d
    total = sum(p.stat().st_size for p in d.rglob("*") if p.is_file())
    assert total <= 50 * 2**20, f"shipped model files take {total / 2**20:.1f} MB (> 50 MB)"


def test_shipped_model_generates_a_chunk():
    with torch_threads(1):
        m = load_model()
        cfg = m.config
        assert cfg.latent and cfg.image_height == 64 and cfg.reader == DEFAULT_MODEL.split("tiny-")[1]
        h = cfg.image_height
        rgb = torch.full((1, h, h, 3), 128, dtype=torch.uint8)
        depth = torch.full((1, h, h), 2.0)
        pose = torch.from_numpy(camera_pose_from_agent(0.0, 0.0, 0.0, 1.25))[None]
        out = m.generate(rgb, depth, pose, intrinsics_from_fov(h, h, 90.0), actions=[[0] * cfg.frames],
                         sampling=SamplingConfig(steps=2),
                         generator=torch.Generator().manual_seed(0))
        assert out.rgb.shape == (1, cfg.frames, h, h, 3)
        d = out.depth.numpy()
        assert np.isfinite(d).all() and (d > 0).all()
