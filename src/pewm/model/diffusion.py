"""Diffusion: v-prediction training loss and DDIM sampling (§3.4 of arXiv 2505.05495).

The noise schedule, ``add_noise``, ``get_velocity`` and the DDIM update all come from
``diffusers.DDIMScheduler`` (``prediction_type="v_prediction"``); nothing here re-derives them.

* Forward process: ``x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps`` (``scheduler.add_noise``).
* Target: ``v = sqrt(a_t) eps - sqrt(1 - a_t) x_0`` (``scheduler.get_velocity``; Salimans & Ho 2022).
* Loss: ``|| v_theta(x_t, t | O_t, poses, M) - v ||^2`` over the H future frames (§3.4).
* Sampling: :mod:`pewm.model.sampling` (a pure DDIM loop, guidance and anchoring composed around
  it); :meth:`VDiffusion.sample` composes them for a denoiser and its conditioning.
"""

from __future__ import annotations

import torch

from pewm.model.config import DiffusionConfig
from pewm.model.sampling import KnownRegion, ddim_sample, generator_device, guided, make_scheduler


class VDiffusion:
    """v-prediction loss and DDIM sampler around a :class:`~pewm.model.denoiser.Denoiser`."""

    def __init__(self, cfg: DiffusionConfig):
        cfg.validate()
        self.cfg = cfg
        self.train_scheduler = make_scheduler(cfg)

    def loss(
        self,
        denoiser,
        x0: torch.Tensor,
        cond,
        memory_dropout: float = 0.0,
        generator: torch.Generator | None = None,
        per_sample: bool = False,
    ) -> dict[str, torch.Tensor]:
        """v-prediction MSE for clean future frames ``x0`` ``(B, H, C, h, w)`` (diffusion space).

        Returns ``loss`` (all channels); with ``per_sample`` also ``per_sample`` (detached, ``(B,)``:
        each clip's mean); detached and only in pixel space (``C == 4``), ``loss_rgb`` and
        ``loss_depth`` (latent channels do not separate RGB from depth).
        """
        B, dev = x0.shape[0], x0.device
        sched = self.train_scheduler
        gdev = generator_device(generator, dev)
        t = torch.randint(0, self.cfg.num_train_timesteps, (B,), device=gdev, generator=generator).to(dev)
        noise = torch.randn(x0.shape, device=gdev, dtype=x0.dtype, generator=generator).to(dev)
        x_t = sched.add_noise(x0, noise, t)
        v = sched.get_velocity(x0, noise, t)
        if memory_dropout > 0:
            keep = (torch.rand(B, device=gdev, generator=generator) >= memory_dropout).to(dev)
            cond = cond.drop_memory(keep)
        pred = denoiser(x_t, t, cond)
        err = (pred.float() - v.float()).pow(2)
        out = {"loss": err.mean()}
        if per_sample:
            out["per_sample"] = err.detach().flatten(1).mean(1)
        if not denoiser.cfg.latent:
            out["loss_rgb"] = err[:, :, :3].mean().detach()
            out["loss_depth"] = err[:, :, 3].mean().detach()
        return out

    @torch.no_grad()
    def sample(
        self,
        denoiser,
        cond,
        steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        known: torch.Tensor | None = None,
        known_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """DDIM sampling of the future frames ``(B, H, C, h', w')`` (diffusion space): the pure loop
        :func:`~pewm.model.sampling.ddim_sample` over ``denoiser`` with its conditioning ``cond``,
        wrapped in memory guidance (``guidance_scale``) and anchored to ``known`` where
        ``known_mask`` is 1 (:class:`~pewm.model.sampling.KnownRegion`)."""
        cfg = denoiser.cfg
        steps = self.cfg.sampling_steps if steps is None else int(steps)
        scale = self.cfg.guidance_scale if guidance_scale is None else float(guidance_scale)
        B, dev, dtype = cond.current.shape[0], cond.current.device, cond.current.dtype
        shape = (B, cfg.frames, cfg.out_channels, cfg.frame_height, cfg.frame_width)
        if (known is None) != (known_mask is None):
            raise ValueError("sample: give both known and known_mask, or neither")
        if known is not None and tuple(known.shape) != shape:
            raise ValueError(f"sample: known has shape {tuple(known.shape)}, expected {shape}")
        uncond = cond.drop_memory(torch.zeros(B, dtype=torch.bool, device=dev)) if scale != 1.0 else None
        denoise = guided(
            lambda x, t: denoiser(x, t.expand(B), cond),
            lambda x, t: denoiser(x, t.expand(B), uncond),
            scale,
        )
        hooks = [KnownRegion(known, known_mask, generator)] if known is not None else []
        return ddim_sample(denoise, self.cfg, shape, steps, dev, dtype, generator, hooks)


def v_prediction_loss(denoiser, x0, cond, cfg: DiffusionConfig, **kw) -> dict[str, torch.Tensor]:
    """Functional form of :meth:`VDiffusion.loss`."""
    return VDiffusion(cfg).loss(denoiser, x0, cond, **kw)


__all__ = ["VDiffusion", "make_scheduler", "v_prediction_loss"]
