"""ModelConfig: presets, overrides, dict round trip and validation; the paper preset's scale."""

import json

import pytest
import torch

from pewm.model import PRESETS, READERS, DiffusionConfig, ModelConfig, WorldModel, from_preset


def test_presets_build_and_round_trip_through_json():
    for name in PRESETS:
        cfg = from_preset(name)
        again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
        assert again == cfg
        assert isinstance(again.diffusion, DiffusionConfig)
    assert ModelConfig() == from_preset("tiny"), "ModelConfig defaults are the tiny preset"


def test_tiny_preset_matches_the_cpu_target_shape():
    cfg = from_preset("tiny")
    assert (cfg.image_height, cfg.image_width, cfg.frames) == (64, 64, 8)
    assert 192 <= cfg.width <= 256 and cfg.depth == 6
    # 16x16x4 latents, 2x2 latent patches: 64 tokens of 8x8 pixels, 16 numbers each
    assert cfg.latent and (cfg.frame_height, cfg.frame_width, cfg.frame_channels) == (16, 16, 4)
    assert cfg.pixel_patch == 8 and cfg.tokens_per_frame == 64
    assert cfg.in_channels == 10 and cfg.out_channels == 4


def test_overrides_including_nested_diffusion():
    cfg = from_preset("micro", reader="frames", diffusion={"sampling_steps": 7})
    assert cfg.reader == "frames" and cfg.diffusion.sampling_steps == 7
    assert cfg.diffusion.num_train_timesteps == 1000


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(widht=3), "unknown key"),
        (dict(reader="voxel"), "reader must be one of"),
        (dict(patch_size=5), "not divisible by patch_size"),
        (dict(width=30, heads=4), "not divisible by heads"),
        (dict(depth_min=2.0, depth_max=1.0), "depth_min"),
        (dict(attention="axial"), "attention"),
        (dict(memory_dropout=1.0), "memory_dropout"),
        (dict(diffusion={"sampling_step": 3}), "unknown key"),
        (dict(diffusion={"sampling_steps": 0}), "sampling_steps"),
        (dict(reader_options={"init": "zero"}), "voxel-xattn reader option init must be one of"),
        (dict(reader_options={"colour": 1}), r"the voxel-xattn reader has no option\(s\) \['colour'\]"),
        (dict(reader="frames", reader_options={"ray_bias": 0.5}),
         r"the frames reader has no option\(s\) \['ray_bias'\]"),
    ],
)
def test_invalid_configs_raise_naming_the_field(bad, match):
    with pytest.raises(ValueError, match=match):
        from_preset("micro", **bad)


def test_unknown_keys_in_dict_and_preset_name():
    d = from_preset("micro").to_dict()
    d["colour"] = 1
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['colour'\]"):
        ModelConfig.from_dict(d)
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        from_preset("huge")


def test_reader_options_are_stored_complete_and_follow_the_reader():
    cfg = from_preset("micro")
    cells = {"cell_tokens": 0, "cell_token_cap": 4096}
    assert cfg.reader_options == {"init": "zero-gate", "ray_query": False, "ray_bias": 0.0, **cells}
    assert from_preset("micro", reader="frames").reader_options == {"init": "zero-gate"}
    tuned = from_preset("micro", reader_options={"ray_bias": 0.5})
    assert tuned.reader_options == {"init": "zero-gate", "ray_query": False, "ray_bias": 0.5, **cells}
    assert ModelConfig.from_dict(tuned.to_dict()) == tuned
    # another reader starts from its own defaults; the legacy fields are converted
    assert tuned.replace(reader="none").reader_options == {"init": "zero-gate"}
    assert from_preset("micro", memory_init="zero-out", memory_ray_bias=0.5).reader_options == {
        "init": "zero-out", "ray_query": False, "ray_bias": 0.5, **cells}
    assert from_preset("micro", reader="frames", memory_init="zero-out").reader_options == {"init": "zero-out"}


def _param_counts(name: str) -> dict[str, dict[str, int]]:
    out = {}
    for reader in sorted(READERS):
        with torch.device("meta"):
            out[reader] = WorldModel(from_preset(name, reader=reader)).num_parameters()
    return out


def test_paper_preset_scale_on_meta_device():
    """The paper fine-tunes CogVideoX (~2B) and adds "nearly 1B" of memory parameters (§3.3)."""
    counts = _param_counts("paper")
    for reader, c in counts.items():
        assert 1.5e9 <= c["backbone"] <= 2.5e9, (reader, c)
    assert 0.7e9 <= counts["voxel-xattn"]["memory"] <= 1.3e9, counts["voxel-xattn"]


@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_parameter_parity_across_readers(preset, capsys):
    counts = _param_counts(preset)
    totals = [c["total"] for c in counts.values()]
    with capsys.disabled():
        print(f"\n{preset}: " + ", ".join(f"{r}={c['total'] / 1e6:.3f}M" for r, c in counts.items()))
    assert max(totals) / min(totals) - 1 < 0.05, counts
