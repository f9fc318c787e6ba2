"""The sampling pieces alone (§3.4): the pure DDIM loop, memory guidance as a denoiser wrapper,
anchoring as a step hook, and SamplingConfig; and their composition equals VDiffusion.sample."""

import pytest
import torch

from pewm.model import DiffusionConfig, SamplingConfig, VDiffusion, WorldModel, from_preset, make_scheduler
from pewm.model.sampling import KnownRegion, ddim_sample, guided
from pewm.model.testing import synthetic_batch, torch_threads

CFG = DiffusionConfig()
SHAPE = (2, 3, 4, 5, 5)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with torch_threads(1):
        yield


def _oracle(x0: torch.Tensor, calls: list | None = None):
    """The exact v of ``x0`` at every (x_t, t), elementwise."""
    alphas = make_scheduler(CFG).alphas_cumprod.double()

    def denoise(x_t, t):
        if calls is not None:
            calls.append(int(t))
        a = alphas[t].double()
        eps = (x_t.double() - a.sqrt() * x0) / (1 - a).sqrt()
        return (a.sqrt() * eps - (1 - a).sqrt() * x0).float()

    return denoise


def test_ddim_loop_is_a_function_of_denoiser_schedule_and_settings():
    x0 = torch.rand(SHAPE) * 2 - 1
    for steps in (1, 5):
        calls = []
        out = ddim_sample(_oracle(x0, calls), CFG, SHAPE, steps, "cpu", generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(out, x0, atol=1e-4, rtol=0)
        assert len(calls) == steps and calls == sorted(calls, reverse=True), "timesteps run from noise to clean"
    a = ddim_sample(lambda x, t: torch.zeros_like(x), CFG, SHAPE, 3, "cpu", generator=torch.Generator().manual_seed(1))
    b = ddim_sample(lambda x, t: torch.zeros_like(x), CFG, SHAPE, 3, "cpu", generator=torch.Generator().manual_seed(1))
    c = ddim_sample(lambda x, t: torch.zeros_like(x), CFG, SHAPE, 3, "cpu", generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c), "the generator alone decides the noise"
    with pytest.raises(ValueError, match="steps must be in"):
        ddim_sample(lambda x, t: x, CFG, SHAPE, 0, "cpu")


def test_guidance_wrapper_mixes_with_and_without_memory():
    cond = lambda x, t: torch.full_like(x, 3.0)  # noqa: E731
    empty = lambda x, t: torch.full_like(x, 1.0)  # noqa: E731
    assert guided(cond, empty, 1.0) is cond, "scale 1 is no guidance (one evaluation per step)"
    x, t = torch.zeros(2, 2), torch.tensor(5)
    assert torch.equal(guided(cond, empty, 2.0)(x, t), torch.full_like(x, 5.0))  # 1 + 2 * (3 - 1)
    assert torch.equal(guided(cond, empty, 0.0)(x, t), torch.full_like(x, 1.0))


def test_known_region_hook_keeps_the_known_values_and_leaves_the_rest():
    x0 = torch.rand(SHAPE) * 2 - 1
    known = torch.rand(SHAPE) * 2 - 1
    mask = torch.zeros(SHAPE)
    mask[:, :, :, :2] = 1.0
    free = ddim_sample(_oracle(x0), CFG, SHAPE, 4, "cpu", generator=torch.Generator().manual_seed(0))
    hook = KnownRegion(known, mask, torch.Generator().manual_seed(7))
    anchored = ddim_sample(_oracle(x0), CFG, SHAPE, 4, "cpu", generator=torch.Generator().manual_seed(0), hooks=[hook])
    keep = mask.bool()
    assert torch.equal(anchored[keep], known[keep]), "the final sample is the known value where anchored"
    # an elementwise denoiser: the free region does not see the anchored one
    torch.testing.assert_close(anchored[~keep], free[~keep], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="differ in batch"):
        KnownRegion(known, mask[:1])


def test_sampling_config_validates_and_resolves_defaults():
    d = from_preset("micro").diffusion
    r = SamplingConfig().resolve(d, {"render_supersample": 2})
    assert (r.steps, r.guidance_scale, r.anchor, r.render_supersample) == (d.sampling_steps, d.guidance_scale, d.anchor, 2)
    assert SamplingConfig(steps=7, anchor="pixel").resolve(d).to_dict() == {
        "steps": 7, "guidance_scale": d.guidance_scale, "anchor": "pixel", "render_supersample": 1, "seed": None}
    for bad, match in ((dict(steps=0), "steps must be an integer >= 1"), (dict(anchor="copy"), "anchor must be one of"),
                       (dict(guidance_scale=-1.0), "guidance_scale must be >= 0"),
                       (dict(render_supersample=1.5), "render_supersample must be an integer"),
                       (dict(seed="x"), "seed must be an integer")):
        with pytest.raises(ValueError, match=match):
            SamplingConfig(**bad)
    assert SamplingConfig().generator() is None
    assert torch.equal(torch.randn(3, generator=SamplingConfig(seed=4).generator()),
                       torch.randn(3, generator=torch.Generator().manual_seed(4)))


def test_world_model_sampling_is_the_composition_bitwise():
    """WorldModel.generate = the pure loop over its denoiser with guidance: the same bits as
    VDiffusion.sample on the same conditioning and noise."""
    m = WorldModel(from_preset("micro", reader="voxel-xattn")).eval()
    batch = synthetic_batch(m.config, 1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, cond = m.condition(batch)
        for scale in (1.0, 2.0):
            ref = VDiffusion(m.config.diffusion).sample(m.denoiser, cond, steps=3, guidance_scale=scale,
                                                        generator=torch.Generator().manual_seed(3))
            got = m._sample(cond, SamplingConfig(steps=3, guidance_scale=scale).resolve(m.config.diffusion),
                            torch.Generator().manual_seed(3), [])
            assert torch.equal(ref, got)
