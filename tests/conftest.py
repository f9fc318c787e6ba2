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


@pytest.fixture(scope="session")
def load_benchmark():
    """Import a script of ``benchmarks/`` by name (its ``from _results import ...`` resolved)."""
    import importlib.util
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    loaded = {}

    def load(name: str):
        if name not in loaded:
            sys.path.insert(0, str(bench))
            try:
                spec = importlib.util.spec_from_file_location(name, bench / f"{name}.py")
                mod = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(mod)
            finally:
                sys.path.remove(str(bench))
            loaded[name] = mod
        return loaded[name]

    return load
