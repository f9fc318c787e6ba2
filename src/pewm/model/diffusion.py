"""Diffusion: v-prediction training loss and DDIM sampling (§3.4 of arXiv 2505.05495).

The noise schedule, ``add_noise``, ``get_velocity`` and the DDIM update all come from
``diffusers.DDIMScheduler`` (``prediction_type="v_prediction"``); nothing here re-derives them.

* Forward process: ``x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps`` (``scheduler.add_noise``).
* Target: ``v = sqrt(a_t) eps - sqrt(1 - a_t) x_0`` (``scheduler.get_velocity``; Salimans & Ho 2022).
* Loss: ``|| v_theta(x_t, t | O_t, poses, M) - v ||^2`` over the H future frames (§3.4).
* Sampling: DDIM (eta = 0) with ``steps`` steps (the paper uses 50 on a GPU; the tiny preset
  defaults to 10 for the 2 s CPU budget).
* Classifier-free guidance on the memory: training drops the memory of a sample with probability
  ``memory_dropout``; sampling mixes ``v = v_empty + s (v_memory - v_empty)`` (``s = 1``: off).
* Known regions (map-anchored sampling, beyond the paper; RePaint, Lugmayr et al. 2022, with DDIM):
  where ``known_mask`` is 1, each DDIM update's ``x_{t'}`` is replaced by the known clean value
  noised to ``t'`` (``scheduler.add_noise``), and the final sample by the known value itself, so
  the model only fills in the rest, conditioned on it at every step.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from pewm.model.config import DiffusionConfig


@lru_cache(maxsize=None)
def _scheduler_class():
    from diffusers import DDIMScheduler  # imported lazily: diffusers takes seconds to import

    return DDIMScheduler


def _gen_device(generator: torch.Generator | None, device) -> torch.device:
    """Random numbers are drawn where ``generator`` lives (a CPU generator works with a CUDA model)."""
    return torch.device(device) if generator is None else generator.device


def make_scheduler(cfg: DiffusionConfig):
    """A fresh ``diffusers.DDIMScheduler`` for ``cfg`` (schedulers are stateful: one per loop)."""
    return _scheduler_class()(**cfg.to_scheduler_kwargs())


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
    ) -> dict[str, torch.Tensor]:
        """v-prediction MSE for clean future frames ``x0`` ``(B, H, C, h, w)`` (diffusion space).

        Returns ``loss`` (all channels) and, detached and only in pixel space (``C == 4``),
        ``loss_rgb`` and ``loss_depth`` (latent channels do not separate RGB from depth).
        """
        B, dev = x0.shape[0], x0.device
        sched = self.train_scheduler
        gdev = _gen_device(generator, dev)
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
        """DDIM sampling of the future frames ``(B, H, C, h', w')`` (diffusion space).

        ``known`` ``(B, H, C, h', w')`` clean values and ``known_mask`` (broadcastable to it, in
        ``[0, 1]``) anchor part of the sample (see the module docstring)."""
        cfg = denoiser.cfg
        steps = self.cfg.sampling_steps if steps is None else int(steps)
        if not 1 <= steps <= self.cfg.num_train_timesteps:
            raise ValueError(f"steps must be in [1, {self.cfg.num_train_timesteps}], got {steps}")
        scale = self.cfg.guidance_scale if guidance_scale is None else float(guidance_scale)
        B, dev = cond.current.shape[0], cond.current.device
        dtype = cond.current.dtype
        sched = make_scheduler(self.cfg)
        sched.set_timesteps(steps, device=dev)
        shape = (B, cfg.frames, cfg.out_channels, cfg.frame_height, cfg.frame_width)
        x = torch.randn(shape, device=_gen_device(generator, dev), dtype=dtype, generator=generator).to(dev)
        x = x * sched.init_noise_sigma
        uncond = cond.drop_memory(torch.zeros(B, dtype=torch.bool, device=dev)) if scale != 1.0 else None
        if (known is None) != (known_mask is None):
            raise ValueError("sample: give both known and known_mask, or neither")
        if known is not None:
            if tuple(known.shape) != shape:
                raise ValueError(f"sample: known has shape {tuple(known.shape)}, expected {shape}")
            known = known.to(dev, dtype)
            known_mask = known_mask.to(dev, dtype)
        timesteps = list(sched.timesteps)
        for i, t in enumerate(timesteps):
            tb = t.to(dev).expand(B)
            v = denoiser(x, tb, cond)
            if uncond is not None:
                v_empty = denoiser(x, tb, uncond)
                v = v_empty + scale * (v - v_empty)
            x = sched.step(v, t, x, eta=0.0, generator=generator).prev_sample
            if known is not None:
                if i + 1 < len(timesteps):
                    eps = torch.randn(shape, device=_gen_device(generator, dev), dtype=dtype, generator=generator).to(dev)
                    target = sched.add_noise(known, eps, timesteps[i + 1].to(dev).expand(B))
                else:
                    target = known
                x = known_mask * target + (1 - known_mask) * x
        return x


def v_prediction_loss(denoiser, x0, cond, cfg: DiffusionConfig, **kw) -> dict[str, torch.Tensor]:
    """Functional form of :meth:`VDiffusion.loss`."""
    return VDiffusion(cfg).loss(denoiser, x0, cond, **kw)


__all__ = ["VDiffusion", "make_scheduler", "v_prediction_loss"]
