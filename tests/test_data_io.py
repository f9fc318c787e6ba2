"""Episode files: exact round trips, sliced reads, atomic writes and every kind of corruption."""

import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import pewm.data.io as pio
from pewm.data import Episode, EpisodeError, check_episode_file, read_episode, read_episode_info, write_episode
from pewm.geometry import camera_pose_from_agent, intrinsics_from_fov, poses_from_actions


def make_episode(T=6, H=12, W=16, seed=0, **kw):
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, 3, T - 1)
    poses = poses_from_actions(camera_pose_from_agent(1.0, 2.0, 0.3, 1.25), actions)
    depth = rng.uniform(0.0, 8.0, (T, H, W)).astype(np.float32)
    depth[:, 0, 0] = 0.0  # "no measurement"
    args = dict(
        rgb=rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8), depth=depth, poses=poses,
        actions=actions.astype(np.int64), intrinsics=intrinsics_from_fov(W, H, 90.0),
        collided=rng.random(T - 1) < 0.3, episode_id="ep-a", house_id="house-1", split="val",
        kind="loop", meta={"seed": seed, "agent_states": [[1.0, 2.0, 0.3]]},
    )  # fmt: skip
    args.update(kw)
    return Episode(**args)


def assert_same(a: Episode, b: Episode, depth_exact=False):
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.poses, b.poses)
    if a.actions is None:
        assert b.actions is None
    else:
        np.testing.assert_array_equal(a.actions, b.actions)
    if a.collided is None:
        assert b.collided is None
    else:
        np.testing.assert_array_equal(a.collided, b.collided)
    if depth_exact:
        np.testing.assert_array_equal(a.depth, b.depth)
    else:
        np.testing.assert_allclose(a.depth, b.depth, rtol=2.0**-11, atol=0)
    assert (a.intrinsics, a.episode_id, a.house_id, a.split, a.kind, a.meta) == (
        b.intrinsics, b.episode_id, b.house_id, b.split, b.kind, b.meta,
    )  # fmt: skip


@pytest.fixture
def saved(tmp_path):
    ep = make_episode()
    path = write_episode(tmp_path / "ep_000000.npz", ep)
    return ep, path


# ---------------------------------------------------------------------------------------- round trip
def test_round_trip(saved):
    ep, path = saved
    back = read_episode(path)
    assert back.rgb.dtype == np.uint8 and back.depth.dtype == np.float32
    assert back.poses.dtype == np.float64 and back.actions.dtype == np.int64 and back.collided.dtype == np.bool_
    assert_same(ep, back)
    assert back.depth[0, 0, 0] == 0.0 and back.frame_offset == 0
    assert back.rgb.flags.writeable and back.depth.flags.writeable


def test_depth_float16_precision(tmp_path):
    ep = make_episode()
    ep.depth[...] = np.geomspace(0.01, 60000.0, ep.depth.size).reshape(ep.depth.shape)
    back = read_episode(write_episode(tmp_path / "e.npz", ep))
    rel = np.abs(back.depth - ep.depth) / ep.depth
    assert rel.max() <= 2.0**-11  # ~0.049%
    exact = make_episode()
    exact.depth[...] = np.round(exact.depth * 8) / 8  # multiples of 1/8 m below 256 m are exact in float16
    assert_same(exact, read_episode(write_episode(tmp_path / "x.npz", exact)), depth_exact=True)


def test_depth_beyond_float16_is_refused(tmp_path):
    ep = make_episode()
    ep.depth[0, 0, 1] = 70000.0
    with pytest.raises(EpisodeError, match="65504"):
        write_episode(tmp_path / "e.npz", ep)


def test_no_actions_round_trip(tmp_path):
    ep = make_episode(actions=None, collided=None, kind="tum", split="test")
    back = read_episode(write_episode(tmp_path / "e.npz", ep))
    assert back.actions is None and back.collided is None
    assert_same(ep, back)
    info = read_episode_info(tmp_path / "e.npz")
    assert not info.has_actions and not info.has_collided


def test_single_frame(tmp_path):
    ep = make_episode(T=1)
    back = read_episode(write_episode(tmp_path / "e.npz", ep))
    assert back.num_frames == 1 and back.actions.shape == (0,)


def test_info_without_pixels(saved):
    ep, path = saved
    info = read_episode_info(path)
    assert (info.num_frames, info.height, info.width, info.split, info.kind) == (6, 12, 16, "val", "loop")
    assert info.intrinsics == ep.intrinsics and info.meta == ep.meta
    assert info.stats["num_collisions"] == int(ep.collided.sum())
    assert sum(info.stats["action_counts"]) == 5
    assert check_episode_file(path).episode_id == "ep-a"


def test_plain_numpy_load(saved):
    ep, path = saved
    with np.load(path) as z:
        assert set(z.files) == {"meta", "poses", "actions", "collided", "depth", "rgb", "frame_crc32"}
        assert z["depth"].dtype == np.float16
        np.testing.assert_array_equal(z["rgb"], ep.rgb)
        meta = json.loads(str(z["meta"]))
    assert meta["format_version"] == pio.FORMAT_VERSION and meta["episode_id"] == "ep-a"


def test_deterministic_bytes(tmp_path):
    ep = make_episode()
    a = write_episode(tmp_path / "a.npz", ep).read_bytes()
    b = write_episode(tmp_path / "b.npz", ep).read_bytes()
    assert a == b


def test_write_validates(tmp_path):
    ep = make_episode(actions=np.zeros(6, np.int64))
    with pytest.raises(EpisodeError, match="actions"):
        write_episode(tmp_path / "e.npz", ep)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------- slicing
@pytest.mark.parametrize("frames", [(1, 4), slice(1, 4), range(1, 4)])
def test_frame_slice(saved, frames):
    ep, path = saved
    part = read_episode(path, frames=frames)
    assert part.num_frames == 3 and part.frame_offset == 1
    assert_same(ep.slice(1, 4), part)
    np.testing.assert_array_equal(part.actions, ep.actions[1:3])


def test_frame_slice_edges(saved):
    ep, path = saved
    tail = read_episode(path, frames=slice(-2, None))
    assert tail.frame_offset == 4 and tail.num_frames == 2
    np.testing.assert_array_equal(tail.rgb, ep.rgb[4:])
    one = read_episode(path, frames=(5, 6))
    assert one.num_frames == 1 and one.actions.shape == (0,)
    with pytest.raises(ValueError, match="step"):
        read_episode(path, frames=slice(0, 4, 2))
    with pytest.raises(ValueError, match="empty"):
        read_episode(path, frames=(3, 3))


def test_slice_reads_less(tmp_path, monkeypatch):
    ep = make_episode(T=40, H=24, W=32)
    path = write_episode(tmp_path / "e.npz", ep)
    seen = []
    orig = zipfile.ZipExtFile.read

    def spy(self, n=-1):
        out = orig(self, n)
        seen.append(len(out))
        return out

    monkeypatch.setattr(zipfile.ZipExtFile, "read", spy)
    read_episode(path, frames=(0, 4))
    stored = ep.rgb.nbytes + ep.depth.nbytes // 2  # depth is float16 on disk
    assert sum(seen) < 0.2 * stored  # 4 of 40 frames (+ poses, actions, headers)


# ---------------------------------------------------------------------------------------- corruption
def test_missing_file(tmp_path):
    with pytest.raises(EpisodeError, match="file not found") as ei:
        read_episode(tmp_path / "nope.npz")
    assert ei.value.code == "missing" and ei.value.path == tmp_path / "nope.npz"


def test_not_a_zip(tmp_path):
    p = tmp_path / "e.npz"
    p.write_text("hello, not a zip")
    with pytest.raises(EpisodeError, match="not a zip/npz") as ei:
        read_episode(p)
    assert ei.value.code == "not_zip" and str(p) in str(ei.value)
    np.save(tmp_path / "arr.npy", np.zeros(3))  # a plain .npy is not an episode either
    with pytest.raises(EpisodeError, match="not a zip"):
        read_episode(tmp_path / "arr.npy")


@pytest.mark.parametrize("keep", [0.5, 0.9, -1, -22, 100])
def test_truncated(saved, keep):
    _, path = saved
    data = path.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else (len(data) + keep if keep < 0 else keep)
    path.write_bytes(data[:n])
    with pytest.raises(EpisodeError, match="truncated") as ei:
        read_episode(path)
    assert ei.value.code == "truncated" and ei.value.path == path
    with pytest.raises(EpisodeError):
        read_episode_info(path)
    with pytest.raises(EpisodeError):
        check_episode_file(path)


def test_empty_file(tmp_path):
    (tmp_path / "e.npz").write_bytes(b"")
    with pytest.raises(EpisodeError):
        read_episode(tmp_path / "e.npz")


def _member_data_range(path, name):
    with zipfile.ZipFile(path) as zf:
        zi = zf.getinfo(name)
    with open(path, "rb") as f:
        f.seek(zi.header_offset + 26)
        nlen, xlen = np.frombuffer(f.read(4), "<u2")
    start = zi.header_offset + 30 + int(nlen) + int(xlen)
    return start, start + zi.compress_size


@pytest.mark.parametrize("member", ["rgb.npy", "depth.npy", "poses.npy", "meta.npy"])
def test_flipped_byte_in_compressed_data(saved, member):
    _, path = saved
    a, b = _member_data_range(path, member)
    data = bytearray(path.read_bytes())
    data[(a + b) // 2] ^= 0x55
    path.write_bytes(bytes(data))
    with pytest.raises(EpisodeError, match=member.split(".")[0]) as ei:
        read_episode(path)
    assert ei.value.code in ("corrupt", "bad_meta")


def test_crc_mismatch_is_reported(tmp_path):
    """Uncompressed (stored) members: a flipped byte decompresses fine, only the CRC catches it."""
    ep = make_episode()
    path = write_episode(tmp_path / "e.npz", ep, compresslevel=0)
    a, b = _member_data_range(path, "rgb.npy")
    data = bytearray(path.read_bytes())
    data[b - 5] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(EpisodeError, match="checksum mismatch") as ei:
        read_episode(path)
    assert ei.value.code == "corrupt"


def test_byte_flip_sweep_never_silently_wrong(tmp_path):
    """Flip bytes all over a file: each read either raises EpisodeError or returns the exact data."""
    ep = make_episode(T=3, H=4, W=5)
    path = write_episode(tmp_path / "e.npz", ep)
    clean = path.read_bytes()
    ref = read_episode(path)
    bad = tmp_path / "bad.npz"
    raised = 0
    for i in range(0, len(clean), 3):
        data = bytearray(clean)
        data[i] ^= 0xA5
        bad.write_bytes(bytes(data))
        try:
            got = read_episode(bad)
        except EpisodeError as e:
            assert e.path == bad
            raised += 1
            continue
        assert_same(ref, got, depth_exact=True)
    assert raised > len(clean) // 6


def test_byte_flip_sweep_sliced_reads(tmp_path):
    """Sliced reads stop before the zip CRC; the per-frame checksums must still catch every flip."""
    ep = make_episode(T=4, H=4, W=5)
    path = write_episode(tmp_path / "e.npz", ep, compresslevel=0)  # stored: flips never break inflate
    clean = path.read_bytes()
    ref = read_episode(path, frames=(0, 2))
    bad = tmp_path / "bad.npz"
    for i in range(*_member_data_range(path, "rgb.npy"))[::2]:
        data = bytearray(clean)
        data[i] ^= 0x10
        bad.write_bytes(bytes(data))
        try:
            got = read_episode(bad, frames=(0, 2))
        except EpisodeError as e:
            assert e.code == "corrupt"
            continue
        assert_same(ref, got, depth_exact=True)


def test_sliced_read_checks_frame_checksum(tmp_path):
    ep = make_episode(H=32, W=32)  # members larger than zipfile's read-ahead, so its CRC is never reached
    path = write_episode(tmp_path / "e.npz", ep, compresslevel=0)
    a, b = _member_data_range(path, "rgb.npy")
    frame = ep.rgb[0].nbytes
    data = bytearray(path.read_bytes())
    data[b - 3 * frame - 7] ^= 0x01  # inside frame 2 of 6
    path.write_bytes(bytes(data))
    with pytest.raises(EpisodeError, match="'rgb': frame 2 is corrupted"):
        read_episode(path, frames=(1, 4))
    read_episode(path, frames=(0, 2))  # frames before the damage still read
    with pytest.raises(EpisodeError, match="checksum mismatch"):
        read_episode(path, frames=(3, 6))  # reaching the member's end checks the zip CRC too


def _rewrite(path, drop=(), replace=None):
    """Re-zip ``path`` dropping members and replacing some with raw bytes or arrays."""
    replace = replace or {}
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    for n in drop:
        del members[n]
    for n, v in replace.items():
        if isinstance(v, np.ndarray):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, v)
            v = buf.getvalue()
        members[n] = v
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, v in members.items():
            zf.writestr(n, v)


def _meta(path):
    with np.load(path) as z:
        return json.loads(str(z["meta"]))


@pytest.mark.parametrize("member", ["rgb.npy", "depth.npy", "poses.npy", "actions.npy", "collided.npy"])
def test_missing_array(saved, member):
    _, path = saved
    _rewrite(path, drop=[member])
    with pytest.raises(EpisodeError, match=f"missing array.*{member[:-4]}") as ei:
        read_episode(path)
    assert ei.value.code == "missing_array"
    with pytest.raises(EpisodeError, match="missing array"):
        check_episode_file(path)


def test_missing_meta(saved):
    _, path = saved
    _rewrite(path, drop=["meta.npy"])
    with pytest.raises(EpisodeError, match="missing array 'meta'"):
        read_episode(path)


@pytest.mark.parametrize(
    "member, value, pattern",
    [
        ("rgb.npy", np.zeros((6, 12, 16, 3), np.float32), "'rgb': wrong dtype float32"),
        ("depth.npy", np.zeros((6, 12, 16), np.float32), "'depth': wrong dtype float32, expected float16"),
        ("actions.npy", np.zeros(5, np.int32), "'actions': wrong dtype int32"),
        ("poses.npy", np.tile(np.eye(4), (5, 1, 1)), r"'poses': shape \(5, 4, 4\) is inconsistent"),
        ("rgb.npy", np.zeros((7, 12, 16, 3), np.uint8), r"'rgb': shape \(7, 12, 16, 3\) is inconsistent"),
        ("actions.npy", np.zeros(6, np.int64), r"'actions': shape \(6,\) is inconsistent"),
        ("collided.npy", np.zeros(4, bool), r"'collided': shape \(4,\) is inconsistent"),
        ("depth.npy", np.zeros((6, 16, 12), np.float16), "'depth': shape .* is inconsistent"),
    ],
)
def test_wrong_dtype_or_shape(saved, member, value, pattern):
    _, path = saved
    _rewrite(path, replace={member: value})
    with pytest.raises(EpisodeError, match=pattern) as ei:
        read_episode(path)
    assert ei.value.code in ("bad_array", "inconsistent")


def test_inconsistent_sizes_caught_cheaply(saved):
    _, path = saved
    _rewrite(path, replace={"rgb.npy": np.zeros((7, 12, 16, 3), np.uint8)})
    with pytest.raises(EpisodeError, match=r"'rgb': shape \(7, 12, 16, 3\) is inconsistent"):
        check_episode_file(path)


@pytest.mark.parametrize(
    "edit, pattern, code",
    [
        (lambda m: "{not json", "invalid JSON", "bad_meta"),
        (lambda m: json.dumps([1, 2]), "expected a JSON object", "bad_meta"),
        (lambda m: json.dumps({k: v for k, v in m.items() if k != "split"}), "missing field 'split'", "bad_meta"),
        (lambda m: json.dumps({**m, "num_frames": "6"}), "field 'num_frames'", "bad_meta"),
        (lambda m: json.dumps({**m, "format": "other"}), "field 'format'", "bad_meta"),
        (lambda m: json.dumps({**m, "format_version": 99}), "unsupported format version 99", "version"),
        (lambda m: json.dumps({**m, "intrinsics": {"fx": 1}}), "field 'intrinsics'", "bad_meta"),
        (lambda m: json.dumps({**m, "num_frames": 5}), "inconsistent", "inconsistent"),
        (lambda m: json.dumps({**m, "has_actions": False}), "'actions'.*inconsistent", "inconsistent"),
        (lambda m: json.dumps({**m, "width": 12}), "inconsistent: intrinsics", "inconsistent"),
    ],
)
def test_bad_metadata(saved, edit, pattern, code):
    _, path = saved
    _rewrite(path, replace={"meta.npy": np.array(edit(_meta(path)))})
    with pytest.raises(EpisodeError, match=pattern) as ei:
        read_episode(path)
    assert ei.value.code == code


def test_meta_not_a_string(saved):
    _, path = saved
    _rewrite(path, replace={"meta.npy": np.zeros(3, np.uint8)})
    with pytest.raises(EpisodeError, match="0-d unicode string"):
        read_episode(path)


def test_invalid_content_on_read(saved):
    _, path = saved
    with np.load(path) as z:
        poses = z["poses"].copy()
        actions = z["actions"].copy()
    poses[1, :3, :3] *= 2.0
    actions[0] = 7
    _rewrite(path, replace={"poses.npy": poses})
    with pytest.raises(EpisodeError, match="not orthonormal") as ei:
        read_episode(path)
    assert ei.value.code == "invalid"
    assert read_episode(path, validate=False).poses[1, 0, 0] == poses[1, 0, 0]
    _rewrite(path, replace={"poses.npy": np.tile(np.eye(4), (6, 1, 1)), "actions.npy": actions})
    with pytest.raises(EpisodeError, match="invalid action id 7"):
        read_episode(path)


# ---------------------------------------------------------------------------------------- atomicity
def test_crash_mid_write_leaves_nothing(tmp_path, monkeypatch):
    ep = make_episode()
    orig = pio._frames

    def crashing(arr, dtype, crcs=None):
        gen = orig(arr, dtype, crcs)
        yield next(gen)
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(pio, "_frames", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        write_episode(tmp_path / "ep.npz", ep)
    assert list(tmp_path.iterdir()) == []


def test_crash_keeps_previous_file(tmp_path, monkeypatch):
    old = make_episode(seed=1)
    path = write_episode(tmp_path / "ep.npz", old)
    before = path.read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pio.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        write_episode(path, make_episode(seed=2))
    monkeypatch.undo()
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["ep.npz"]
    assert_same(old, read_episode(path))


def test_killed_process_leaves_only_temp_file(tmp_path):
    """A hard kill (no cleanup possible) leaves a temp file but never a partial final file."""
    code = f"""
import os, numpy as np
import pewm.data.io as pio
from pewm.data import Episode
from pewm.geometry import Intrinsics
os.fsync = lambda fd: os._exit(3)   # die right before the rename
ep = Episode(np.zeros((2, 4, 5, 3), np.uint8), np.zeros((2, 4, 5), np.float32), np.tile(np.eye(4), (2, 1, 1)),
             np.zeros(1, np.int64), Intrinsics(5, 5, 2, 1.5, 5, 4))
pio.write_episode({str(tmp_path / "ep.npz")!r}, ep)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert r.returncode == 3, r.stderr.decode()
    names = [p.name for p in tmp_path.iterdir()]
    assert "ep.npz" not in names
    assert len(names) == 1 and names[0].startswith(".ep.npz.") and names[0].endswith(".tmp")
