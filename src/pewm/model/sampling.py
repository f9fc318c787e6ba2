"""Sampling the future frames: one settings object and one pure DDIM loop (§3.4 of arXiv 2505.05495).

* :class:`SamplingConfig` -- every sampling setting in one object (DDIM steps, memory guidance,
  map anchoring, render supersampling, seed), passed unchanged from the command line through the
  benchmark, rollouts and the env to :meth:`~pewm.model.WorldModel.generate`. ``None`` means "the
  model's default" (``DiffusionConfig`` / the model's ``memory.json``); :meth:`SamplingConfig.resolve`
  fills them in.
* :func:`ddim_sample` -- the loop, a pure function of a denoiser callable ``v = f(x_t, t)``, the
  noise schedule and the settings (k-diffusion's shape: guidance and anchoring stay outside it):
  DDIM with ``eta = 0`` from ``diffusers.DDIMScheduler`` (``prediction_type="v_prediction"``).
* :func:`guided` -- classifier-free guidance on the memory as a denoiser wrapper:
  ``v = v_empty + s (v_memory - v_empty)`` (training drops the memory with ``memory_dropout``).
* :class:`KnownRegion` -- map anchoring as a step hook (RePaint, Lugmayr et al. 2022, with DDIM):
  where ``mask`` is 1 each update's ``x_{t'}`` is replaced by the known clean value noised to
  ``t'`` (``scheduler.add_noise``) and the final sample by the known value itself, so the model only
  fills in the rest, conditioned on it at every step.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from typing import Callable, Protocol, Sequence

import torch

from pewm.model.config import ANCHORS, DiffusionConfig

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t scalar tensor) -> v


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample (None = the model's default).

    ``steps``: DDIM steps per chunk (``DiffusionConfig.sampling_steps``); ``guidance_scale``:
    classifier-free guidance on the memory, 1 = off; ``anchor``: keep what the memory holds
    (readers with ``can_anchor``): ``none`` | ``latent`` | ``pixel`` | ``both`` (see
    :class:`KnownRegion` and :meth:`~pewm.model.WorldModel.sample_frames`); ``render_supersample``:
    ``voxel-render`` memories render at this many times the model's resolution
    (``MemoryBuildConfig.render_supersample``); ``seed``: seeds the sampling noise where no
    ``torch.Generator`` is passed (None: torch's global generator).
    """

    steps: int | None = None
    guidance_scale: float | None = None
    anchor: str | None = None
    render_supersample: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "render_supersample", "seed"):  # any integer type (numpy too), stored as int
            v = getattr(self, name)
            if v is not None and not isinstance(v, bool):
                try:
                    object.__setattr__(self, name, operator.index(v))
                except TypeError:
                    pass  # reported below
        for name in ("steps", "render_supersample"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                flag = "--sampling-steps" if name == "steps" else "--render-supersample"
                raise ValueError(f"{flag}: sampling {name} must be an integer >= 1, got {v!r}")
        if self.guidance_scale is not None and not self.guidance_scale >= 0:
            raise ValueError(f"--guidance-scale: sampling guidance_scale must be >= 0, got {self.guidance_scale!r}")
        if self.anchor is not None and self.anchor not in ANCHORS:
            raise ValueError(f"--anchor: sampling anchor must be one of {ANCHORS}, got {self.anchor!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise ValueError(f"sampling seed must be an integer, got {self.seed!r}")

    def replace(self, **changes) -> "SamplingConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def resolve(self, diffusion: DiffusionConfig, memory_build: dict | None = None) -> "SamplingConfig":
        """Every ``None`` replaced by the model's default (``diffusion``: its ``DiffusionConfig``,
        ``memory_build``: its ``memory.json`` settings); ``seed`` stays as given."""
        return replace(
            self,
            steps=diffusion.sampling_steps if self.steps is None else self.steps,
            guidance_scale=diffusion.guidance_scale if self.guidance_scale is None else self.guidance_scale,
            anchor=diffusion.anchor if self.anchor is None else self.anchor,
            render_supersample=int((memory_build or {}).get("render_supersample", 1))
            if self.render_supersample is None else self.render_supersample,
        )

    def generator(self) -> torch.Generator | None:
        """A CPU generator seeded with ``seed`` (None without a seed)."""
        return None if self.seed is None else torch.Generator().manual_seed(int(self.seed))


@lru_cache(maxsize=None)
def _scheduler_class():
    from diffusers import DDIMScheduler  # imported lazily: diffusers takes seconds to import

    return DDIMScheduler


def make_scheduler(cfg: DiffusionConfig):
    """A fresh ``diffusers.DDIMScheduler`` for ``cfg`` (schedulers are stateful: one per loop)."""
    return _scheduler_class()(**cfg.to_scheduler_kwargs())


def generator_device(generator: torch.Generator | None, device) -> torch.device:
    """Random numbers are drawn where ``generator`` lives (a CPU generator works with a CUDA model)."""
    return torch.device(device) if generator is None else generator.device


def randn(shape, generator: torch.Generator | None, device, dtype) -> torch.Tensor:
    """Standard normal noise drawn on ``generator``'s device and moved to ``device``."""
    return torch.randn(shape, device=generator_device(generator, device), dtype=dtype, generator=generator).to(device)


def guided(denoise: Denoise, denoise_empty: Denoise, scale: float) -> Denoise:
    """Classifier-free guidance on the memory: ``v_empty + scale (v - v_empty)`` (``scale = 1``: off)."""
    if scale == 1.0:
        return denoise

    def f(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v = denoise(x, t)
        v_empty = denoise_empty(x, t)
        return v_empty + scale * (v - v_empty)

    return f


class StepHook(Protocol):
    def __call__(self, x: torch.Tensor, i: int, timesteps: Sequence[torch.Tensor], scheduler) -> torch.Tensor: ...


class KnownRegion:
    """Anchoring hook: after DDIM update ``i`` keep ``known`` where ``mask`` is 1 (RePaint).

    ``known`` ``(B, H, C, h', w')`` clean values; ``mask`` broadcastable to it, in ``[0, 1]``. The
    noise for re-noising is drawn from ``generator`` after each update except the last."""

    def __init__(self, known: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None):
        if known.shape[:1] != mask.shape[:1]:
            raise ValueError(f"KnownRegion: known {tuple(known.shape)} and mask {tuple(mask.shape)} differ in batch")
        self.known, self.mask, self.generator = known, mask, generator

    def __call__(self, x: torch.Tensor, i: int, timesteps: Sequence[torch.Tensor], scheduler) -> torch.Tensor:
        known = self.known.to(x.device, x.dtype)
        mask = self.mask.to(x.device, x.dtype)
        if i + 1 < len(timesteps):
            eps = randn(x.shape, self.generator, x.device, x.dtype)
            target = scheduler.add_noise(known, eps, timesteps[i + 1].to(x.device).expand(x.shape[0]))
        else:
            target = known
        return mask * target + (1 - mask) * x


@torch.no_grad()
def ddim_sample(
    denoise: Denoise,
    diffusion: DiffusionConfig,
    shape: tuple[int, ...],
    steps: int,
    device,
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
    hooks: Sequence[StepHook] = (),
) -> torch.Tensor:
    """DDIM (``eta = 0``) from pure noise of ``shape`` in ``steps`` steps of ``diffusion``'s schedule;
    after every update each hook maps ``x`` (e.g. :class:`KnownRegion`). Returns the clean sample."""
    if not 1 <= int(steps) <= diffusion.num_train_timesteps:
        raise ValueError(f"steps must be in [1, {diffusion.num_train_timesteps}], got {steps}")
    sched = make_scheduler(diffusion)
    sched.set_timesteps(int(steps), device=device)
    x = randn(shape, generator, device, dtype) * sched.init_noise_sigma
    timesteps = list(sched.timesteps)
    for i, t in enumerate(timesteps):
        v = denoise(x, t.to(device))
        x = sched.step(v, t, x, eta=0.0, generator=generator).prev_sample
        for hook in hooks:
            x = hook(x, i, timesteps, sched)
    return x


__all__ = ["Denoise", "KnownRegion", "SamplingConfig", "StepHook", "ddim_sample", "generator_device", "guided",
           "make_scheduler", "randn"]
