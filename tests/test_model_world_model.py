"""WorldModel: generate() outputs and input errors, save_pretrained/from_pretrained round trip."""

import json

import numpy as np
import pytest
import torch

from pewm.geometry import Intrinsics, camera_pose_from_agent, intrinsics_from_fov, poses_from_actions
from pewm.model import MemoryInput, SamplingConfig, WorldModel, from_preset
from pewm.model.testing import synthetic_batch, synthetic_memory, torch_threads


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with torch_threads(1):
        yield


def _trained(reader="voxel-xattn", seed=0) -> WorldModel:
    torch.manual_seed(seed)
    m = WorldModel(from_preset("micro", reader=reader))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m.eval()


def _inputs(cfg):
    rgb = (torch.rand(1, cfg.image_height, cfg.image_width, 3) * 255).to(torch.uint8)
    depth = torch.rand(1, cfg.image_height, cfg.image_width) * 4 + 0.5
    pose = camera_pose_from_agent(1.0, 2.0, 0.3, 1.2)
    K = intrinsics_from_fov(cfg.image_width, cfg.image_height, 90.0)
    return rgb, depth, pose, K


def test_generate_returns_rgb_depth_and_the_poses_of_the_actions():
    m = _trained()
    cfg = m.config
    rgb, depth, pose, K = _inputs(cfg)
    actions = [0, 1][: cfg.frames]
    mem = synthetic_memory(cfg, 1, generator=torch.Generator().manual_seed(0))
    out = m.generate(rgb, depth, pose, K, actions=actions, memory=mem, generator=torch.Generator().manual_seed(0))
    H, h, w = cfg.frames, cfg.image_height, cfg.image_width
    assert out.rgb.shape == (1, H, h, w, 3) and out.rgb.dtype == torch.uint8
    assert out.depth.shape == (1, H, h, w) and out.depth.dtype == torch.float32
    assert out.depth.min() >= cfg.depth_min * (1 - 1e-5) and out.depth.max() <= cfg.depth_max * (1 + 1e-5)
    np.testing.assert_allclose(out.poses[0].numpy(), poses_from_actions(pose, actions)[1:])
    # the same future given as poses gives the same frames; float output on request
    again = m.generate(rgb, depth, pose, K.matrix, poses=out.poses[0], memory=mem, rgb_uint8=False,
                       generator=torch.Generator().manual_seed(0))
    assert again.rgb.dtype == torch.float32
    assert torch.equal((again.rgb * 255).round().to(torch.uint8), out.rgb)
    assert torch.equal(again.depth, out.depth)
    # batched inputs with float channel-first RGB
    B = 2
    out2 = m.generate(torch.rand(B, 3, h, w), depth.expand(B, h, w), np.stack([pose, pose]), K,
                      actions=np.array([[0] * H, [2] * H]), sampling=SamplingConfig(steps=2))
    assert out2.rgb.shape == (B, H, h, w, 3)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(rgb=torch.zeros(1, 8, 8, 3, dtype=torch.uint8)), r"current_rgb has resolution 8x8"),
        (dict(depth=torch.zeros(1, 8, 8)), r"current_depth has shape"),
        (dict(actions=[0, 7]), r"invalid action id 7 at index 1"),
        (dict(actions=[0, 0, 0]), r"actions has shape .* one action per future frame"),
        (dict(pose=np.eye(4)[:3]), r"current_pose has shape \(3, 4\)"),
        (dict(pose=np.diag([1.0, 1.0, -1.0, 1.0])), r"current_pose rotation block has determinant -1"),
        (dict(actions=None, poses=np.tile(np.eye(4), (3, 1, 1))), r"poses has shape \(3, 4, 4\)"),
        (dict(actions=[0, 0], poses=np.tile(np.eye(4), (2, 1, 1))), r"exactly one of actions"),
        (dict(K=Intrinsics(10, 10, 15.5, 15.5, 32, 32)), r"K: intrinsics are for 32x32"),
        (dict(K=np.eye(4)), r"K has shape \(4, 4\)"),
    ],
)
def test_generate_rejects_bad_inputs_naming_the_field(change, match):
    m = _trained()
    rgb, depth, pose, K = _inputs(m.config)
    kw = dict(rgb=rgb, depth=depth, pose=pose, K=K, actions=[0, 1], poses=None)
    kw.update(change)
    with pytest.raises(ValueError, match=match):
        m.generate(kw["rgb"], kw["depth"], kw["pose"], kw["K"], actions=kw["actions"], poses=kw["poses"],
                   sampling=SamplingConfig(steps=1))


def test_save_and_load_round_trip_is_exact(tmp_path):
    m = _trained("frames")
    d = m.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors"], "no temp files left"
    back = WorldModel.from_pretrained(d)
    assert back.config == m.config
    sd, sd2 = m.state_dict(), back.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    batch = synthetic_batch(m.config, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = m(batch, generator=torch.Generator().manual_seed(5))["loss"]
        b = back.eval()(batch, generator=torch.Generator().manual_seed(5))["loss"]
    assert torch.equal(a, b)
    m.save_pretrained(d)  # overwriting an existing checkpoint works
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors"]


def test_switching_the_reader_loads_the_backbone_and_starts_from_the_stage1_model(tmp_path):
    stage1 = _trained("none")
    d = stage1.save_pretrained(tmp_path / "stage1")
    stage2 = WorldModel.from_pretrained(d, reader="voxel-xattn")
    assert stage2.config.reader == "voxel-xattn"
    batch = synthetic_batch(stage1.config, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x0, c1 = stage1.condition(batch)
        _, c2 = stage2.condition(batch)
        t = torch.tensor([10, 700])
        v1 = stage1.denoiser(x0, t, c1)
        stage1.denoiser.reader.block = lambda i, x, c, cam, ctx: x  # stage 1 without memory blocks
        assert torch.equal(stage2.denoiser(x0, t, c2), stage1.denoiser(x0, t, c1))
    assert v1.shape == x0.shape


def test_from_pretrained_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint directory"):
        WorldModel.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty/config.json is missing"):
        WorldModel.from_pretrained(tmp_path / "empty")
    d = _trained().save_pretrained(tmp_path / "ok")
    cfg_path = d / "config.json"
    meta = json.loads(cfg_path.read_text())

    def write(m):
        cfg_path.write_text(json.dumps(m))

    write({**meta, "config": {**meta["config"], "unknown_field": 1}})
    with pytest.raises(ValueError, match=r"config.json: incompatible model config: .*unknown_field"):
        WorldModel.from_pretrained(d)
    write({**meta, "format_version": 99})
    with pytest.raises(ValueError, match="format_version 99"):
        WorldModel.from_pretrained(d)
    cfg_path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        WorldModel.from_pretrained(d)
    write({**meta, "config": {**meta["config"], "width": 64, "time_embed_dim": 64}})
    with pytest.raises(ValueError, match=r"model.safetensors does not match its config.json: .*shape mismatch"):
        WorldModel.from_pretrained(d)
    # another reader's options are not this reader's: the config names the file and the options
    write({**meta, "config": {**meta["config"], "reader": "frames"}})
    with pytest.raises(ValueError, match=r"config.json: incompatible model config: the frames reader has no option"):
        WorldModel.from_pretrained(d)
    write({**meta, "config": {**meta["config"], "reader": "frames", "reader_options": {"init": "zero-gate"}}})
    with pytest.raises(ValueError, match=r"missing .* tensor"):
        WorldModel.from_pretrained(d)
    write(meta)
    (d / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read the weights"):
        WorldModel.from_pretrained(d)
    (d / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors is missing"):
        WorldModel.from_pretrained(d)


def test_memory_input_moves_and_keeps_masks_boolean():
    mem = synthetic_memory(from_preset("micro"), 1).to(dtype=torch.float64)
    assert mem.tokens.dtype == torch.float64 and mem.mask.dtype == torch.bool
    assert MemoryInput.empty().tokens is None


def test_extra_readers_keep_their_own_memory_settings(tmp_path):
    main = _trained("voxel-render")
    main.memory_build = {"extractor": "rgb", "render_supersample": 2}
    d = main.save_pretrained(tmp_path / "m")
    xattn = WorldModel.from_pretrained(d, reader="voxel-xattn")
    assert xattn.memory_build is None, "another reader does not inherit the main model's memory settings"
    xattn.memory_build = {"extractor": "autoencoder"}
    xattn.save_reader(d)
    assert (d / "readers" / "voxel-xattn.memory.json").is_file()
    assert WorldModel.from_pretrained(d, reader="voxel-xattn").memory_build == {"extractor": "autoencoder"}
    assert WorldModel.from_pretrained(d).memory_build == {"extractor": "rgb", "render_supersample": 2}
    assert WorldModel.from_pretrained(d, reader="voxel-render").memory_build["render_supersample"] == 2

    # reader weights saved before per-reader settings existed: built like the main model, as trained
    (d / "readers" / "voxel-xattn.memory.json").unlink()
    assert WorldModel.from_pretrained(d, reader="voxel-xattn").memory_build["extractor"] == "rgb"
    # saving a reader without settings removes stale ones
    xattn.memory_build = None
    (d / "readers" / "voxel-xattn.memory.json").write_text("{}")
    xattn.save_reader(d)
    assert not (d / "readers" / "voxel-xattn.memory.json").exists()


def test_extra_readers_keep_their_own_architecture_options(tmp_path):
    """A reader re-initialised for stage 2 with other reader options (zero-out, ray queries) is
    loaded beside a main model that has the defaults, and gives the same outputs as before saving."""
    main = _trained("voxel-render")
    d = main.save_pretrained(tmp_path / "m")
    xattn = WorldModel.from_pretrained(d, reader="voxel-xattn")
    xattn.reinit_reader({"init": "zero-out", "ray_query": True})
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in xattn.memory_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    xattn.save_reader(d)
    again = WorldModel.from_pretrained(d, reader="voxel-xattn")
    assert again.config.reader_options == {"init": "zero-out", "ray_query": True, "ray_bias": 0.0,
                                            "cell_tokens": 0, "cell_token_cap": 4096}
    assert again.denoiser.reader.options.ray_query is True and again.denoiser.reader.ray_query is not None
    # the main (voxel-render) model is unchanged
    assert WorldModel.from_pretrained(d).config.reader_options == {"init": "zero-gate", "layout_prior": False}
    # a reader without weights in the directory starts from the defaults, not from another reader's options
    d2 = again.save_pretrained(tmp_path / "xattn_main")
    other = WorldModel.from_pretrained(d2, reader="frames")
    assert other.config.reader_options == {"init": "zero-gate"}
    # re-initialising keeps the backbone's dtype and device
    half = WorldModel.from_pretrained(d).to(torch.float64)
    half.reinit_reader({"init": "zero-out"})
    assert all(p.dtype == torch.float64 for p in half.memory_parameters())
    batch = synthetic_batch(again.config, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x0, c1 = xattn.condition(batch)
        _, c2 = again.condition(batch)
        t = torch.tensor([10, 700])
        assert torch.equal(xattn.denoiser(x0, t, c1), again.denoiser(x0, t, c2))


def test_checkpoints_with_the_legacy_reader_fields_still_load(tmp_path):
    """pewm <= 0.1.0 kept the reader options as ModelConfig fields (``memory_init``,
    ``memory_ray_query``, ``memory_ray_bias`` in config.json) and as ``reader_config`` in the
    metadata of a reader's weights: both load as ``reader_options``."""
    from safetensors.torch import load_file, save_file

    d = _trained("voxel-render").save_pretrained(tmp_path / "m")
    meta = json.loads((d / "config.json").read_text())
    cfg = {k: v for k, v in meta["config"].items() if k != "reader_options"}
    cfg.update(memory_init="zero-out", memory_ray_query=False, memory_ray_bias=0.0)
    (d / "config.json").write_text(json.dumps({**meta, "config": cfg}))
    assert WorldModel.from_pretrained(d).config.reader_options == {"init": "zero-out", "layout_prior": False}

    xattn = WorldModel.from_pretrained(d, reader="voxel-xattn")
    xattn.reinit_reader({"ray_bias": 0.5})
    path = xattn.save_reader(d)
    old = {"memory_init": "zero-out", "memory_ray_query": False, "memory_ray_bias": 0.5}
    save_file(load_file(str(path)), str(path),
              metadata={"format": "pewm.WorldModel", "reader": "voxel-xattn", "reader_config": json.dumps(old)})
    back = WorldModel.from_pretrained(d, reader="voxel-xattn")
    assert back.config.reader_options == {"init": "zero-out", "ray_query": False, "ray_bias": 0.5,
                                           "cell_tokens": 0, "cell_token_cap": 4096}
    sd = xattn.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in back.state_dict().items())


def test_sampling_config_validates_resolves_and_seeds_generate():
    from pewm.model.config import DiffusionConfig

    for bad, match in [(dict(steps=0), "sampling steps must be an integer >= 1"),
                       (dict(guidance_scale=-1.0), "sampling guidance_scale must be >= 0"),
                       (dict(anchor="copy"), "sampling anchor must be one of"),
                       (dict(render_supersample=True), "sampling render_supersample must be an integer"),
                       (dict(seed=1.5), "sampling seed must be an integer")]:
        with pytest.raises(ValueError, match=match):
            SamplingConfig(**bad)
    s = SamplingConfig(steps=3, seed=7)
    assert s.replace(anchor="pixel") == SamplingConfig(steps=3, anchor="pixel", seed=7) and s.anchor is None
    diff = DiffusionConfig(sampling_steps=9, guidance_scale=1.5, anchor="latent")
    r = s.resolve(diff, {"render_supersample": 2})
    assert (r.steps, r.guidance_scale, r.anchor, r.render_supersample, r.seed) == (3, 1.5, "latent", 2, 7)
    # the seed draws the noise where no generator is given: the same frames as that generator
    m = _trained()
    rgb, depth, pose, K = _inputs(m.config)
    kw = dict(actions=[0, 1][: m.config.frames])
    a = m.generate(rgb, depth, pose, K, sampling=SamplingConfig(steps=2, seed=4), **kw)
    b = m.generate(rgb, depth, pose, K, sampling=SamplingConfig(steps=2), generator=torch.Generator().manual_seed(4), **kw)
    c = m.generate(rgb, depth, pose, K, sampling=SamplingConfig(steps=2, seed=5), **kw)
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.depth, b.depth) and not torch.equal(a.depth, c.depth)
