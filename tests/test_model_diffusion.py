"""v-prediction loss and DDIM sampling with diffusers (§3.4); every reader overfits one batch."""

import pytest
import torch

from pewm.model import READERS, VDiffusion, WorldModel, from_preset, make_scheduler
from pewm.model.testing import synthetic_batch, torch_threads


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with torch_threads(1):
        yield


def test_the_scheduler_is_diffusers_ddim_with_v_prediction():
    from diffusers import DDIMScheduler

    s = make_scheduler(from_preset("micro").diffusion)
    assert isinstance(s, DDIMScheduler)
    assert s.config.prediction_type == "v_prediction"


def test_ddim_with_an_oracle_v_recovers_the_clean_frames():
    """With the exact v of a known x0, the DDIM loop must return x0: checks timesteps, the
    v-prediction wiring and the final step, for several step counts."""
    cfg = from_preset("micro")
    diff = VDiffusion(cfg.diffusion)
    x0 = torch.rand(2, cfg.frames, 4, cfg.image_height, cfg.image_width) * 2 - 1
    alphas = diff.train_scheduler.alphas_cumprod.double()

    class Oracle:
        def __init__(self):
            self.cfg, self.calls = cfg, 0

        def __call__(self, x_t, t, cond):
            self.calls += 1
            a = alphas[t].view(-1, 1, 1, 1, 1)
            eps = (x_t.double() - a.sqrt() * x0) / (1 - a).sqrt()
            return (a.sqrt() * eps - (1 - a).sqrt() * x0).float()

    class Cond:
        current = torch.zeros(2, 4, cfg.image_height, cfg.image_width)

        def drop_memory(self, keep):
            return self

    for steps in (1, 4, 25):
        oracle = Oracle()
        out = diff.sample(oracle, Cond(), steps=steps, generator=torch.Generator().manual_seed(0))
        assert oracle.calls == steps
        torch.testing.assert_close(out, x0, atol=1e-4, rtol=0)
    oracle = Oracle()
    diff.sample(oracle, Cond(), steps=3, guidance_scale=2.0)
    assert oracle.calls == 6, "classifier-free guidance evaluates with and without memory"


def test_loss_uses_diffusers_velocity_and_reports_channels():
    m = WorldModel(from_preset("micro"))
    batch = synthetic_batch(m.config, 2, generator=torch.Generator().manual_seed(0))
    out = m(batch, generator=torch.Generator().manual_seed(1))
    assert set(out) == {"loss", "loss_rgb", "loss_depth"}
    assert out["loss"].item() == pytest.approx((3 * out["loss_rgb"].item() + out["loss_depth"].item()) / 4, rel=1e-4)


@pytest.mark.parametrize("reader", sorted(READERS))
def test_every_reader_overfits_one_batch(reader):
    torch.manual_seed(0)
    m = WorldModel(from_preset("micro", reader=reader))
    batch = synthetic_batch(m.config, 4, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        # the same timesteps and noise at every step: a fixed regression target to overfit
        loss = m(batch, memory_dropout=0.0, generator=torch.Generator().manual_seed(1))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], f"{reader}: {losses[0]:.3f} -> {losses[-1]:.3f}"


def test_stage2_trains_only_the_memory_and_keeps_the_backbone():
    torch.manual_seed(0)
    m = WorldModel(from_preset("micro", reader="voxel-xattn"))
    with torch.no_grad():  # stand-in for a trained stage-1 backbone (its output layer is no longer zero)
        for p in m.backbone_parameters():
            p.add_(torch.randn_like(p) * 0.1)
    before = {n: p.detach().clone() for n, p in m.named_parameters() if not n.startswith("denoiser.reader.")}
    for p in m.backbone_parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(m.memory_parameters(), lr=3e-3)
    batch = synthetic_batch(m.config, 4, generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(15):
        loss = m(batch, memory_dropout=0.0, generator=torch.Generator().manual_seed(1))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    for n, p in m.named_parameters():
        if n in before:
            assert torch.equal(p, before[n]), n


@pytest.mark.parametrize("reader", ["frames", "voxel-render"])
@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")
def test_loss_and_gradients_under_bf16_autocast(reader):
    m = WorldModel(from_preset("micro", reader=reader))
    batch = synthetic_batch(m.config, 2, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = m(batch)["loss"]
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
