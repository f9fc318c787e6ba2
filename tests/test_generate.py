"""`pewm data generate` logic: deterministic, resumable, parallel, split by house."""

import hashlib

import pytest

from pewm.data import open_dataset
from pewm.sim.generate import GenerateConfig, generate_dataset, house_splits, load_house


def _digests(path):
    ds = open_dataset(path)
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in ds.episode_paths()}


CFG = GenerateConfig(houses=3, episodes_per_house=2, steps=12, seed=3)


def test_same_arguments_same_bytes_and_workers_do_not_matter(tmp_path):
    a = generate_dataset(tmp_path / "a", CFG)
    generate_dataset(tmp_path / "b", GenerateConfig(**{**CFG.__dict__, "workers": 2}))
    assert a["generated"] == 6
    da, db = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert len(da) == 6 and da == db
    other = generate_dataset(tmp_path / "c", GenerateConfig(**{**CFG.__dict__, "seed": 4}))
    assert other["generated"] == 6 and _digests(tmp_path / "c") != da


def test_rerun_after_interruption_finishes_only_missing_episodes(tmp_path):
    out = tmp_path / "ds"
    generate_dataset(out, CFG)
    before = _digests(out)
    ds = open_dataset(out)
    ds.episode_path(1).unlink()  # lost
    ds.episode_path(4).write_bytes(ds.episode_path(4).read_bytes()[:1000])  # truncated by a crash
    (ds.episodes_dir / ".ep_000002.npz.123.tmp").write_bytes(b"half")  # a writer's leftover temp file
    res = generate_dataset(out, CFG)
    assert res["generated"] == 2 and res["skipped"] == 4
    assert _digests(out) == before
    assert not ds.temp_files()
    again = generate_dataset(out, CFG)
    assert again["generated"] == 0


def test_resuming_with_other_arguments_is_refused(tmp_path):
    out = tmp_path / "ds"
    generate_dataset(out, GenerateConfig(houses=1, episodes_per_house=1, steps=5))
    with pytest.raises(ValueError, match="different arguments.*steps"):
        generate_dataset(out, GenerateConfig(houses=1, episodes_per_house=1, steps=6))
    # the number of workers is not part of the dataset's identity
    assert generate_dataset(out, GenerateConfig(houses=1, episodes_per_house=1, steps=5, workers=2))["generated"] == 0


def test_splits_are_by_house_and_houses_are_saved(tmp_path):
    assert house_splits(1) == ["train"]
    assert house_splits(2) == ["train", "test"]
    assert house_splits(4) == ["train", "train", "val", "test"]
    assert house_splits(20).count("test") == 2 and house_splits(20).count("val") == 2
    out = tmp_path / "ds"
    generate_dataset(out, CFG)
    ds = open_dataset(out)
    split_of_house = {}
    for info in ds.infos():
        assert split_of_house.setdefault(info.house_id, info.split) == info.split
        house = load_house(out, info.house_id)
        assert house is not None and len(house.rooms) >= 2
    assert sorted(split_of_house.values()) == ["test", "train", "val"]


def test_bad_arguments_name_the_option():
    with pytest.raises(ValueError, match="--steps"):
        GenerateConfig(steps=501)
    with pytest.raises(ValueError, match="--houses"):
        GenerateConfig(houses=0)
    with pytest.raises(ValueError, match="--resolution"):
        GenerateConfig(resolution=100)
