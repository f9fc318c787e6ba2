"""``pewm play``'s session (pewm.play.session) and message parsing (pewm.play.protocol), with the
shipped model: the real and the imagined view share a pose, the memory switch changes what is
imagined, a revisit is remembered with memory and not without, downloads are valid files."""

import json

import numpy as np
import pytest

from pewm.assets import load_model
from pewm.model.testing import torch_threads
from pewm.play import PlayConfig, PlaySession
from pewm.play.protocol import MAX_MESSAGE_BYTES, ProtocolError, parse_message


@pytest.fixture(scope="module")
def model():
    with torch_threads(1):
        yield load_model()


def _session(model, **kw) -> PlaySession:
    return PlaySession(model, PlayConfig(**{"sampling_steps": 4, **kw}))


def test_a_step_moves_the_real_agent_and_imagines_the_same_pose(model):
    s = _session(model)
    start = s.frames[-1]
    assert start.step == 0 and start.psnr is None and np.array_equal(start.imagined_rgb, start.real_rgb)
    f = s.step("forward")
    assert s.step_count == 1 and f.step == 1
    np.testing.assert_allclose(f.pose, s.sim.pose_of(s.sim.state), atol=1e-9)
    assert f.imagined_rgb.shape == f.real_rgb.shape == (64, 64, 3) and f.imagined_rgb.dtype == np.uint8
    assert not np.array_equal(f.imagined_rgb, f.real_rgb)  # imagined, not copied
    assert 5 < f.psnr < 60 and f.seconds > 0
    n = len(s.surface_map)
    for a in ("left", "left", "left"):
        s.step(a)
    assert len(s.surface_map) > n  # turning shows new space; the map grows
    xyz, rgb = s.map_points(n)
    assert xyz.shape == (len(s.surface_map) - n, 3) and rgb.dtype == np.uint8
    assert s.map_points(len(s.surface_map))[0].shape == (0, 3)
    top = s.top_down()
    assert top.ndim == 3 and top.shape[2] == 3 and (top != 255).any()


def test_same_seed_same_walk_and_the_memory_switch_changes_the_next_frame(model):
    a, b = _session(model), _session(model)
    for act in ("left", "left"):
        fa, fb = a.step(act), b.step(act)
        assert np.array_equal(fa.imagined_rgb, fb.imagined_rgb)
    b.memory = False
    fa, fb = a.step("right"), b.step("right")
    assert not fb.memory and fa.memory
    assert not np.array_equal(fa.imagined_rgb, fb.imagined_rgb)


def test_turn_away_and_back_is_remembered_with_memory_and_not_without(model):
    """The paper's point, live: turn 90 degrees away and back; the view of the start is closer to
    the real one with memory than without (the model must re-imagine it)."""
    scores = {}
    for memory in (True, False):
        s = _session(model, memory=memory)
        for act in ["left"] * 6 + ["right"] * 6:
            f = s.step(act)
        np.testing.assert_allclose(f.pose, s.frames[0].pose, atol=1e-6)  # back at the start pose
        scores[memory] = f.psnr
    assert scores[True] > scores[False] + 2.0, scores


def test_settings_reset_new_house_and_bad_input(model):
    s = _session(model)
    assert s.sampling_steps == 4 and s.can_anchor
    s.sampling_steps = 2
    s.anchor = "none"
    assert (s.sampling_steps, s.anchor) == (2, "none")
    for bad in (0, 51, 2.5, True, "4"):
        with pytest.raises(ValueError, match="sampling steps"):
            s.sampling_steps = bad
    with pytest.raises(ValueError, match="anchor must be one of"):
        s.anchor = "sometimes"
    with pytest.raises(ValueError, match="unknown action 'jump'"):
        s.step("jump")
    with pytest.raises(ValueError, match="unknown action 7"):
        s.step(7)
    s.step("forward")
    house = s.house_seed
    s.reset()
    assert s.step_count == 0 and s.house_seed == house and len(s.frames) == 1
    s.reset(new_house=True)
    assert s.house_seed != house and s.step_count == 0
    with pytest.raises(ValueError, match="--house-seed"):
        PlayConfig(house_seed=-1)
    with pytest.raises(ValueError, match="sampling steps"):
        PlayConfig(sampling_steps=0)


def test_recording_is_bounded_and_downloads_are_valid_files(model, tmp_path):
    s = _session(model, max_recorded=3, sampling_steps=1)
    for _ in range(4):
        s.step("left")
    assert len(s.frames) == 3 and s.step_count == 4
    video = s.export_video(tmp_path / "play.mp4")
    assert video.read_bytes()[4:8] == b"ftyp"
    import imageio.v2 as imageio

    reader = imageio.get_reader(video)
    n = sum(1 for _ in reader)
    reader.close()
    assert n == 3
    ply = s.export_ply(tmp_path / "map.ply")
    head = ply.read_bytes()[:400].decode("latin-1")
    assert head.startswith("ply") and f"element vertex {len(s.surface_map)}" in head


@pytest.mark.parametrize("raw, match", [
    ("not json", "malformed JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"type": "fly"}', "unknown message type 'fly'"),
    ('{"action": "forward"}', "unknown message type None"),
    ('{"type": "action", "action": "jump"}', "unknown action 'jump'"),
    ('{"type": "action", "action": ["forward"]}', "unknown action"),
    ('{"type": "action", "action": "forward", "speed": 3}', "unknown field"),
    ('{"type": "settings"}', "at least one of"),
    ('{"type": "settings", "steps": "4"}', "steps must be a int"),
    ('{"type": "settings", "steps": true}', "steps must be a int"),
    ('{"type": "settings", "steps": 0}', "steps must be from 1 to 50"),
    ('{"type": "settings", "memory": 1}', "memory must be a bool"),
    ('{"type": "settings", "anchor": "both-ways"}', "anchor must be one of"),
    ('{"type": "hello", "session": 5}', "session must be null"),
    ('{"type": "hello", "session": "' + "x" * 100 + '"}', "session must be null"),
    ("[" * 100000, "message too large"),
    ("[" * 3000 + "]" * 1000, "malformed JSON"),
    (None, "binary messages"),
    (b"{}", "binary messages"),
])
def test_bad_messages_are_refused_with_a_reason(raw, match):
    with pytest.raises(ProtocolError, match=match):
        parse_message(raw)


def test_good_messages_parse():
    assert parse_message('{"type": "action", "action": "left"}').action == "left"
    assert parse_message('{"type": "hello", "session": null}').session is None
    assert parse_message(json.dumps({"type": "settings", "memory": False, "steps": 4})).settings == {"memory": False, "steps": 4}
    assert parse_message('{"type": "new_house"}').type == "new_house"
    assert len(json.dumps({"type": "settings", "memory": True, "anchor": "latent", "steps": 50})) < MAX_MESSAGE_BYTES
