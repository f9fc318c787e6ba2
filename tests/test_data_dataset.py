"""Dataset directories: dataset.json, episode layout, summary, resumability and verify_dataset."""

import json

import numpy as np
import pytest

from pewm.data import (
    Dataset,
    DatasetError,
    DatasetSpec,
    Episode,
    EpisodeError,
    create_dataset,
    open_dataset,
    verify_dataset,
    write_episode,
)
from pewm.geometry import ActionConfig, camera_pose_from_agent, intrinsics_from_fov, poses_from_actions

K = intrinsics_from_fov(16, 12, 90.0)


def make_episode(T=5, seed=0, **kw):
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, 3, T - 1)
    args = dict(
        rgb=rng.integers(0, 256, (T, 12, 16, 3), dtype=np.uint8),
        depth=rng.uniform(0.0, 8.0, (T, 12, 16)).astype(np.float32),
        poses=poses_from_actions(camera_pose_from_agent(0.0, 0.0, 0.0, 1.25), actions),
        actions=actions.astype(np.int64), intrinsics=K, collided=np.arange(T - 1) == 1,
        episode_id=f"ep{seed}", house_id=f"h{seed // 2}", split="train", kind="shortest",
    )  # fmt: skip
    args.update(kw)
    return Episode(**args)


@pytest.fixture
def ds(tmp_path) -> Dataset:
    spec = DatasetSpec("toy", K, ActionConfig(0.25, 15.0), generator={"houses": 3, "seed": 7})
    d = create_dataset(tmp_path / "toy", spec)
    splits = ["train", "train", "train", "val", "test"]
    kinds = ["shortest", "loop", "shortest", "look_back", "out_and_back"]
    for i in range(5):
        d.write(i, make_episode(T=3 + i, seed=i, split=splits[i], kind=kinds[i], house_id=f"h{i // 2 if i < 3 else i}"))
    d.write_manifest()
    return d


def test_spec_json_round_trip(tmp_path):
    spec = DatasetSpec("n", K, ActionConfig(0.5, 30.0), generator={"a": [1, 2]}, description="d")
    back = DatasetSpec.from_json(spec.to_json())
    assert back == spec
    d = json.loads(spec.to_json())
    assert d["resolution"] == {"width": 16, "height": 12} and d["format_version"] == 1
    assert DatasetSpec.from_json(DatasetSpec("n", K, None).to_json()).action_config is None
    spec.save(tmp_path / "x.json")
    assert DatasetSpec.load(tmp_path / "x.json") == spec
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temp left


def test_create_and_open(ds, tmp_path):
    assert (ds.root / "dataset.json").is_file() and ds.episodes_dir.is_dir()
    again = open_dataset(ds.root)
    assert again.intrinsics == K and again.spec.generator == {"houses": 3, "seed": 7}
    assert again.spec.action_config == ActionConfig(0.25, 15.0)
    assert "time_utc" in again.spec.created and "pewm_version" in again.spec.created
    assert ds.episode_path(3).name == "ep_000003.npz"
    assert ds.episode_path(1234567).name == "ep_1234567.npz"
    assert len(again) == 5 and [p.name for p in again.episode_paths()][0] == "ep_000000.npz"
    assert len(again.episode_paths("train")) == 3 and len(again.episode_paths("test")) == 1
    with pytest.raises(ValueError):
        ds.episode_path(-1)
    with pytest.raises(DatasetError, match="already exists"):
        create_dataset(ds.root, ds.spec)
    assert create_dataset(ds.root, DatasetSpec("other-name", K), exist_ok=True).name == "toy"
    with pytest.raises(DatasetError, match="'intrinsics'"):
        create_dataset(ds.root, DatasetSpec("toy", intrinsics_from_fov(16, 12, 60.0)), exist_ok=True)


def test_read_write(ds):
    ep = ds.read(2)
    assert ep.num_frames == 5 and ep.episode_id == "ep2"
    assert ds.read(ds.episode_path(2), frames=(1, 3)).num_frames == 2
    assert ds.read("episodes/ep_000002.npz").episode_id == "ep2"
    assert ds.read_info(4).kind == "out_and_back"
    assert [e.episode_id for e in ds.iter_episodes("train")] == ["ep0", "ep1", "ep2"]


def test_write_checks_intrinsics(ds):
    other = intrinsics_from_fov(16, 12, 70.0)
    with pytest.raises(EpisodeError, match="intrinsics") as ei:
        ds.write(9, make_episode(intrinsics=other))
    assert ei.value.code == "intrinsics_mismatch" and not ds.episode_path(9).exists()


@pytest.mark.parametrize(
    "content, pattern",
    [
        (None, "dataset.json: file not found"),
        ("{oops", "dataset.json: invalid JSON.*line 1"),
        ('{"format": "pewm-dataset", "format_version": 1, "name": "x"}', "field 'intrinsics'"),
        ('{"format": "pewm-dataset", "format_version": 7}', "field 'format_version': unsupported version 7"),
        ('{"format": "other"}', "field 'format'"),
        ('{"format": "pewm-dataset", "format_version": 1, "name": ""}', "field 'name'"),
    ],
)
def test_open_errors_name_file_and_field(tmp_path, content, pattern):
    (tmp_path / "episodes").mkdir()
    if content is not None:
        (tmp_path / "dataset.json").write_text(content)
    with pytest.raises(DatasetError, match=pattern):
        open_dataset(tmp_path)


def test_open_error_resolution_mismatch(ds):
    d = json.loads(ds.json_path.read_text())
    d["resolution"]["width"] = 99
    ds.json_path.write_text(json.dumps(d))
    with pytest.raises(DatasetError, match="field 'resolution'"):
        open_dataset(ds.root)
    with pytest.raises(DatasetError, match="no such dataset directory"):
        open_dataset(ds.root / "nope")


def test_summary(ds):
    s = ds.summary()
    assert s["num_episodes"] == 5 and s["num_frames"] == 3 + 4 + 5 + 6 + 7
    assert s["splits"]["train"] == {"episodes": 3, "frames": 12, "houses": 2}
    assert s["splits"]["val"] == {"episodes": 1, "frames": 6, "houses": 1}
    assert list(s["splits"]) == ["train", "val", "test"]
    assert s["kinds"] == {"look_back": 1, "loop": 1, "out_and_back": 1, "shortest": 2}
    assert s["resolution"] == {"width": 16, "height": 12} and s["intrinsics"] == K.to_dict()
    assert s["num_collisions"] == 5 and s["with_actions"] == 5 and s["num_houses"] == 4
    assert s["disk_bytes"] >= s["episode_bytes"] > 0
    json.dumps(s)


def test_summary_reads_no_pixels(ds, monkeypatch):
    import pewm.data.io as pio

    def no(*a, **k):
        raise AssertionError("summary must not read arrays")

    monkeypatch.setattr(pio, "_read_array", no)
    assert ds.summary()["num_episodes"] == 5


def test_has_valid_episode(ds):
    assert ds.has_valid_episode(0) and not ds.has_valid_episode(7)
    data = ds.episode_path(1).read_bytes()
    ds.episode_path(1).write_bytes(data[: len(data) // 2])
    assert not ds.has_valid_episode(1)
    ds.episode_path(2).write_bytes(b"junk")
    assert not ds.has_valid_episode(2)
    # written with other intrinsics behind the dataset's back
    write_episode(ds.episode_path(3), make_episode(intrinsics=intrinsics_from_fov(16, 12, 60.0)))
    assert not ds.has_valid_episode(3)


def test_verify_clean(ds):
    assert verify_dataset(ds.root) == []
    assert ds.verify(full=False) == []
    seen = []
    verify_dataset(ds.root, progress=lambda i, n, p: seen.append((i, n)))
    assert seen[-1] == (5, 5)
    assert verify_dataset(ds.root, progress=True) == []


def test_verify_finds_each_problem(ds):
    root = ds.root
    data = ds.episode_path(0).read_bytes()
    ds.episode_path(0).write_bytes(data[:-40])  # truncated
    b = bytearray(ds.episode_path(1).read_bytes())
    b[len(b) // 2] ^= 0xFF  # corrupted in the middle
    ds.episode_path(1).write_bytes(bytes(b))
    write_episode(ds.episode_path(2), make_episode(intrinsics=intrinsics_from_fov(16, 12, 60.0)))  # wrong K
    ds.episode_path(3).write_text("not an episode")  # unreadable
    ds.write(6, make_episode(seed=4, house_id="h4", split="test"))  # same id as ep 4, index 5 missing
    ds.write(7, make_episode(seed=8, house_id="h0", split="test"))  # house h0 also in train
    (ds.episodes_dir / ".ep_000008.npz.abc123.tmp").write_bytes(b"partial")
    (ds.episodes_dir / "notes.txt").write_text("?")

    problems = verify_dataset(root)
    by = {}
    for p in problems:
        by.setdefault(p.kind, []).append(p)
        assert str(p.path) in str(p)
    assert [p.path.name for p in by["truncated"]] == ["ep_000000.npz"]
    assert [p.path.name for p in by["unreadable"]] == ["ep_000001.npz", "ep_000003.npz"]
    assert [p.path.name for p in by["intrinsics_mismatch"]] == ["ep_000002.npz"]
    assert [p.path.name for p in by["size_mismatch"]] == ["ep_000000.npz", "ep_000002.npz", "ep_000003.npz"]
    assert [p.path.name for p in by["unexpected_file"]] == ["ep_000006.npz", "ep_000007.npz"]
    assert [p.path.name for p in by["temp_file"]] == [".ep_000008.npz.abc123.tmp"]
    assert [p.path.name for p in by["stray_file"]] == ["notes.txt"]
    assert [p.path.name for p in by["duplicate_id"]] == ["ep_000006.npz"]
    assert "h0" in by["split_leak"][0].reason
    assert all(p.severity == "error" for p in problems if p.kind != "split_leak")
    assert by["split_leak"][0].severity == "warning"

    # the cheap mode still finds structural problems
    quick = {(p.kind, p.path.name) for p in verify_dataset(root, full=False)}
    assert ("truncated", "ep_000000.npz") in quick and ("intrinsics_mismatch", "ep_000002.npz") in quick

    s = ds.summary()
    assert len(s["unreadable"]) >= 2
    assert [p.name for p in ds.clean_temp_files()] == [".ep_000008.npz.abc123.tmp"]
    assert ds.temp_files() == []


def test_verify_inconsistent_episode(ds):
    import io
    import zipfile

    path = ds.episode_path(4)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.zeros(2, np.int64))
    members["actions.npy"] = buf.getvalue()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, v in members.items():
            zf.writestr(n, v)
    size, inconsistent = verify_dataset(ds.root)
    assert size.kind == "size_mismatch" and size.path == path  # the manifest recorded another file
    assert inconsistent.kind == "inconsistent" and inconsistent.path == path and "actions" in inconsistent.reason


def test_verify_bad_dataset_json(ds):
    ds.json_path.write_text("[]")
    (p,) = verify_dataset(ds.root)
    assert p.kind == "dataset_json" and p.path.name == "dataset.json"
