"""The RGB-D autoencoder and latent-space world models (§3.2: the paper diffuses VAE latents):
config validation, shapes, latent standardisation, that training it reduces the loss, the
latent ``voxel-render`` path, checkpoints, and the autoencoder training stage."""

import json

import numpy as np
import pytest
import torch

from pewm.geometry import camera_pose_from_agent
from pewm.model import MemoryInput, SamplingConfig, WorldModel
from pewm.model.autoencoder import AutoencoderConfig, RGBDAutoencoder
from pewm.model.testing import torch_threads
from pewm.train import train, train_preset

LATENT = dict(autoencoder=dict(latent_channels=4, downsample=2, channels=[16]), patch_size=2)


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


def _frames(n=6, h=16, w=16, seed=0):
    """Smooth normalised RGB-D frames (blobs of colour and depth), so an autoencoder can learn them."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    out = []
    for _ in range(n):
        a, b, c = torch.rand(3, generator=g) * 2 - 1
        base = torch.stack([torch.sin(3 * a * xx + b), torch.cos(2 * b * yy + c), a * xx * yy, 0.5 * torch.tanh(c + xx)])
        out.append(base.clamp(-1, 1))
    return torch.stack(out)


@pytest.mark.parametrize(
    "bad, match",
    [(dict(downsample=3), "power of 2"), (dict(downsample=1), "power of 2"),
     (dict(downsample=4, channels=(8,)), "2 positive widths"), (dict(latent_channels=0), "positive integer")],
)
def test_config_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        AutoencoderConfig(**bad)


def test_shapes_and_errors():
    ae = RGBDAutoencoder(AutoencoderConfig(latent_channels=3, downsample=4, channels=(8, 16)))
    z = ae.encode(torch.zeros(2, 4, 32, 24))
    assert z.shape == (2, 3, 8, 6)
    assert ae.decode(z).shape == (2, 4, 32, 24)
    with pytest.raises(ValueError, match="divisible by downsample"):
        ae.encode(torch.zeros(1, 4, 30, 32))
    with pytest.raises(ValueError, match=r"expected \(N, 4, h, w\)"):
        ae.encode(torch.zeros(1, 3, 32, 32))


def test_calibrate_standardises_latents_and_decode_inverts_it():
    torch.manual_seed(0)
    ae = RGBDAutoencoder(AutoencoderConfig(latent_channels=4, downsample=2, channels=(16,)))
    x = _frames(8)
    raw = ae.encode(x)  # identity standardisation before calibration
    ae.calibrate(x)
    z = ae.encode(x)
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-4)
    assert torch.allclose(z.std(dim=(0, 2, 3)), torch.ones(4), atol=1e-3)
    assert torch.allclose(ae.decode(z), ae.decoder(raw), atol=1e-5), "decode must undo the standardisation"


def test_training_reduces_the_reconstruction_loss():
    torch.manual_seed(0)
    ae = RGBDAutoencoder(AutoencoderConfig(latent_channels=4, downsample=2, channels=(16,)))
    x = _frames(8)
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    first = float(ae.loss(x, generator=g)["loss"].detach())
    for _ in range(60):
        out = ae.loss(x, generator=g)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert float(out["loss"].detach()) < 0.5 * first
    assert float(out["psnr_rgb"]) > 15.0


def test_latent_world_model_generates_pixels_and_round_trips(tmp_path):
    torch.manual_seed(0)
    m = WorldModel.from_preset("micro", reader="voxel-render", **LATENT).eval()
    cfg = m.config
    assert cfg.latent and (cfg.frame_height, cfg.frame_channels, cfg.pixel_patch) == (8, 4, 4)
    assert m.num_parameters()["autoencoder"] > 0
    with torch.no_grad():
        m.autoencoder.latent_std.fill_(2.0)  # non-default buffers must survive save/load
    rgb = torch.randint(0, 256, (1, 16, 16, 3), dtype=torch.uint8)
    depth = torch.full((1, 16, 16), 2.0)
    K = torch.tensor([[8.0, 0, 7.5], [0, 8.0, 7.5], [0, 0, 1]])
    g = torch.Generator().manual_seed(1)
    pose = torch.from_numpy(camera_pose_from_agent(0.0, 0.0, 0.0, 1.25))[None]
    out = m.generate(rgb, depth, pose, K, actions=[[0, 1]], sampling=SamplingConfig(steps=2), generator=g)
    assert out.rgb.shape == (1, 2, 16, 16, 3) and out.depth.shape == (1, 2, 16, 16)
    assert torch.isfinite(out.depth).all() and (out.depth > 0).all()
    m.save_pretrained(tmp_path / "m")
    again = WorldModel.from_pretrained(tmp_path / "m")
    assert again.config == cfg and float(again.autoencoder.latent_std[0]) == 2.0
    out2 = again.generate(rgb, depth, pose, K, actions=[[0, 1]], sampling=SamplingConfig(steps=2),
                          generator=torch.Generator().manual_seed(1))
    assert torch.equal(out.rgb, out2.rgb)


def test_latent_voxel_render_memory_is_encoded_and_reaches_the_tokens():
    torch.manual_seed(0)
    m = WorldModel.from_preset("micro", reader="voxel-render", **LATENT)
    cfg = m.config
    rendered = torch.rand(1, cfg.frames, 5, 16, 16)
    rendered[:, :, 3] = 2.0
    rendered[:, :, 4] = (torch.rand(1, cfg.frames, 16, 16) > 0.5).float()
    mem = m.encode_memory(MemoryInput(rendered=rendered))
    assert mem.rendered_latent.shape == (1, cfg.frames, cfg.frame_channels + 1, 8, 8)
    cov = mem.rendered_latent[:, :, -1]
    assert torch.allclose(cov, torch.nn.functional.avg_pool2d(rendered[0, :, 4:5], 2)[:, 0][None])
    # the zero-initialised render patch gives 0; once trained, the render changes the tokens
    with torch.no_grad():
        m.denoiser.reader.render_patch.weight.normal_()
    ctx = m.denoiser.reader.prepare(mem, 1, torch.device("cpu"))
    L = cfg.tokens_per_frame
    assert ctx.input_tokens.shape == (1, (cfg.frames + 1) * L, cfg.width)
    assert float(ctx.input_tokens[:, :L].abs().max()) == 0.0, "the current frame gets no render"
    assert float(ctx.input_tokens[:, L:].abs().max()) > 0.0
    # an empty render (nothing covered) is exactly the dropped memory: zero input tokens
    empty = m.encode_memory(MemoryInput(rendered=torch.zeros(1, cfg.frames, 5, 16, 16)))
    assert float(empty.rendered_latent.abs().max()) == 0.0
    with pytest.raises(ValueError, match="encode_memory"):
        m.denoiser.reader.prepare(MemoryInput(rendered=rendered), 1, torch.device("cpu"))


def test_latent_diffusion_loss_has_no_rgb_depth_split():
    m = WorldModel.from_preset("micro", reader="none", **LATENT)
    from pewm.model import ClipBatch

    B, F_ = 2, m.config.frames + 1
    batch = ClipBatch(rgb=torch.rand(B, F_, 3, 16, 16), depth=torch.full((B, F_, 16, 16), 2.0),
                      poses=torch.eye(4).repeat(B, F_, 1, 1), K=torch.tensor([[8.0, 0, 7.5], [0, 8.0, 7.5], [0, 0, 1]]))
    out = m(batch, generator=torch.Generator().manual_seed(0))
    assert set(out) == {"loss"} and torch.isfinite(out["loss"])
    ae = m(batch, objective="autoencoder", generator=torch.Generator().manual_seed(0))
    assert {"loss", "loss_rgb", "loss_depth", "psnr_rgb"} <= set(ae)
    with pytest.raises(ValueError, match="objective"):
        m(batch, objective="vae")


def test_autoencoder_stage_then_backbone_stage(small_dataset, tmp_path):
    root, _ = small_dataset
    base = dict(data=str(root), checkpoint_every=1000, sample_every=1000, warmup_steps=0,
                model_overrides=LATENT, reader="none")
    ae_run = tmp_path / "ae"
    res = train(train_preset("micro", **base, stage="autoencoder", steps=25, lr=3e-3, ema_decay=0.0), ae_run,
                progress=False)
    rec = [json.loads(ln) for ln in (ae_run / "metrics.jsonl").read_text().splitlines()]
    assert np.mean([r["loss"] for r in rec[-5:]]) < 0.7 * np.mean([r["loss"] for r in rec[:5]])
    assert all("psnr_rgb" in r for r in rec)
    ae_model = WorldModel.from_pretrained(res.model_dir)
    assert not torch.allclose(ae_model.autoencoder.latent_std, torch.ones(4)), "latents were calibrated"
    # stage 1 of a latent model needs the autoencoder run
    with pytest.raises(ValueError, match="--stage autoencoder"):
        train(train_preset("micro", **base, stage="backbone", steps=2), tmp_path / "s1x", progress=False)
    s1 = train(train_preset("micro", **base, stage="backbone", steps=4, init=str(ae_run)), tmp_path / "s1",
               progress=False)
    s1_model = WorldModel.from_pretrained(s1.model_dir)
    ae_sd, s1_sd = ae_model.autoencoder.state_dict(), s1_model.autoencoder.state_dict()
    assert all(torch.equal(ae_sd[k], s1_sd[k]) for k in ae_sd), "the autoencoder is frozen in stage 1"
    moved = [k for k, v in s1_model.denoiser.state_dict().items()
             if not k.startswith("reader.") and not torch.equal(v, ae_model.denoiser.state_dict()[k])]
    assert moved, "stage 1 trains the backbone"
    # pixel-space presets have no autoencoder stage
    with pytest.raises(ValueError, match="no autoencoder"):
        train(train_preset("micro", data=str(root), stage="autoencoder", steps=2), tmp_path / "px", progress=False)
