"""Shared fixtures: a small generated dataset, built once per test session."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory):
    """3 houses x 1 episode x 40 steps at 64x64 (train/val/test one house each)."""
    from pewm.sim.generate import GenerateConfig, generate_dataset

    out = tmp_path_factory.mktemp("ds") / "small"
    cfg = GenerateConfig(houses=3, episodes_per_house=1, steps=40, seed=7)
    generate_dataset(out, cfg)
    return out, cfg
