"""``tools/ship_model.py``: re-shipping a model with new memory settings keeps its weights and readers."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from pewm.model import WorldModel, from_preset

TOOL = Path(__file__).resolve().parents[1] / "tools" / "ship_model.py"


@pytest.fixture()
def ship(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("ship_model", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "MODELS_DIR", tmp_path / "models")
    (tmp_path / "models").mkdir()

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["ship_model.py", *map(str, args)])
        mod.main()
    return run


def test_reship_with_a_memory_option_keeps_weights_and_readers(ship, tmp_path):
    torch.manual_seed(0)
    main = WorldModel(from_preset("micro", reader="voxel-render"))
    src = main.save_pretrained(tmp_path / "src")
    torch.manual_seed(1)
    other = WorldModel(from_preset("micro", reader="frames"))
    other.load_state_dict({**other.state_dict(), **{k: v for k, v in main.state_dict().items()
                                                     if not k.startswith("denoiser.reader.")}})
    other.save_reader(src)
    ship(src, "--name", "first", "--keep-readers", "--memory-option", "imagined_fuse_delay_chunks=1",
         "--memory-option", "imagined_edge_tol=0.1")
    out = tmp_path / "models" / "first"
    build = json.loads((out / "memory.json").read_text())
    assert build["imagined_fuse_delay_chunks"] == 1 and build["imagined_edge_tol"] == 0.1
    assert (out / "readers" / "frames.safetensors").is_file()
    shipped = WorldModel.from_pretrained(out)
    for k, v in main.state_dict().items():
        torch.testing.assert_close(shipped.state_dict()[k], v.half().float())
    fr = WorldModel.from_pretrained(out, reader="frames")
    assert fr.config.reader == "frames"
    with pytest.raises(SystemExit, match="imagined_fuse_delay_chunks"):
        ship(src, "--name", "bad", "--memory-option", "imagined_fuse_delay_chunks=-1")
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        ship(src, "--name", "bad", "--memory-option", "imagined_fuse_delay_chunks")
    assert not (tmp_path / "models" / "bad").exists()


def test_readers_only_copies_the_model_files_byte_for_byte(ship, tmp_path):
    torch.manual_seed(0)
    main = WorldModel(from_preset("micro", reader="voxel-render"))
    src = main.save_pretrained(tmp_path / "src", dtype=torch.float16)
    (src / "config.json").write_text((src / "config.json").read_text() + "\n")  # any byte drift would show
    backbone = {k: v for k, v in WorldModel.from_pretrained(src).state_dict().items()
                if not k.startswith("denoiser.reader.")}
    readers = {}
    for seed, reader in [(1, "frames"), (2, "voxel-xattn")]:
        torch.manual_seed(seed)
        other = WorldModel(from_preset("micro", reader=reader))
        other.load_state_dict({**other.state_dict(), **backbone})
        readers[reader] = other
    readers["frames"].save_reader(src)
    run = readers["voxel-xattn"].save_pretrained(tmp_path / "xattn_run")
    ship(src, "--name", "ro", "--readers-only", "--readers", run)
    out = tmp_path / "models" / "ro"
    for name in ("config.json", "model.safetensors", "memory.json"):
        if (src / name).exists():
            assert (out / name).read_bytes() == (src / name).read_bytes(), name
    assert (out / "readers" / "frames.safetensors").read_bytes() == (src / "readers" / "frames.safetensors").read_bytes()
    xa = WorldModel.from_pretrained(out, reader="voxel-xattn")
    for k, v in readers["voxel-xattn"].state_dict().items():
        torch.testing.assert_close(xa.state_dict()[k], v.half().float())
    with pytest.raises(SystemExit, match="--anchor"):
        ship(src, "--name", "bad", "--readers-only", "--readers", run, "--anchor", "none")
    with pytest.raises(SystemExit, match="--readers"):
        ship(src, "--name", "bad", "--readers-only")
    with pytest.raises(SystemExit, match="backbone differs"):
        torch.manual_seed(9)
        stranger = WorldModel(from_preset("micro", reader="voxel-xattn")).save_pretrained(tmp_path / "stranger")
        ship(src, "--name", "bad", "--readers-only", "--readers", stranger)
    assert not (tmp_path / "models" / "bad").exists()
    assert not (tmp_path / "models" / "bad.tmp").exists()
