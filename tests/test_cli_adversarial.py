"""Malformed invocations of every ``pewm`` command, as an adversarial user types them (issue #15).

Each row of :data:`CASES` must give exit code 2, no traceback, and a message naming the culprit
(the option, or the offending value or path). Placeholders in the arguments: ``{ds}`` a small
dataset, ``{tmp}`` an empty scratch directory, ``{file}`` a regular file, ``{empty}`` an empty
directory, ``{loop}`` a symlink loop (unreadable even for root), ``{trunc}`` a dataset with a
truncated episode, ``{badjson}`` a dataset whose ``dataset.json`` is garbage, ``{jsondir}`` one whose
``dataset.json`` is a directory. Every row fails before any heavy work (no training, rendering
or evaluation starts). Then the no-overwrite policy of ``train``, ``eval``, ``map``, ``demo`` and
``data view``: existing output is refused with a message naming ``--overwrite``.
"""

from __future__ import annotations

import os
import shutil

import pytest
from typer.testing import CliRunner

from pewm.cli.main import app

runner = CliRunner()
MARK = "[bold]x"
CLOSE = "x[/red]y"
UNI = "données_ø_雪"

# (id, arguments, strings of which at least one must appear in the output: the culprit)
CASES = [
    # --- the app itself
    ("unknown-command", ["frobnicate"], ["frobnicate"]),
    ("unknown-global-option", ["--bogus", "version"], ["--bogus"]),
    ("version-extra-arg", ["version", "extra"], ["extra"]),
    ("version-bad-option", ["version", "--json"], ["--json"]),
    # --- data generate
    ("gen-missing-out", ["data", "generate"], ["--out"]),
    ("gen-empty-out", ["data", "generate", "--out", ""], ["--out"]),
    ("gen-houses-zero", ["data", "generate", "--out", "{tmp}/g", "--houses", "0"], ["--houses"]),
    ("gen-houses-negative", ["data", "generate", "--out", "{tmp}/g", "--houses", "-3"], ["--houses"]),
    ("gen-houses-not-int", ["data", "generate", "--out", "{tmp}/g", "--houses", "four"], ["--houses", "four"]),
    ("gen-episodes-zero", ["data", "generate", "--out", "{tmp}/g", "--episodes-per-house", "0"],
     ["--episodes-per-house"]),
    ("gen-steps-zero", ["data", "generate", "--out", "{tmp}/g", "--steps", "0"], ["--steps"]),
    ("gen-steps-huge", ["data", "generate", "--out", "{tmp}/g", "--steps", "100000"], ["--steps"]),
    ("gen-resolution-odd", ["data", "generate", "--out", "{tmp}/g", "--resolution", "63"], ["--resolution"]),
    ("gen-seed-negative", ["data", "generate", "--out", "{tmp}/g", "--seed", "-5"], ["--seed"]),
    ("gen-workers-zero", ["data", "generate", "--out", "{tmp}/g", "--workers", "0"], ["--workers"]),
    ("gen-fov-zero", ["data", "generate", "--out", "{tmp}/g", "--fov", "0"], ["--fov"]),
    ("gen-fov-huge", ["data", "generate", "--out", "{tmp}/g", "--fov", "500"], ["--fov"]),
    ("gen-camera-height-negative", ["data", "generate", "--out", "{tmp}/g", "--camera-height", "-1"],
     ["--camera-height"]),
    ("gen-fov-not-float", ["data", "generate", "--out", "{tmp}/g", "--fov", "wide"], ["--fov", "wide"]),
    # --- data import
    ("import-missing-src", ["data", "import", "--out", "{tmp}/i"], ["SRC", "src"]),
    ("import-nonexistent-src", ["data", "import", "{tmp}/nope", "--out", "{tmp}/i"], ["{tmp}/nope"]),
    ("import-src-is-file", ["data", "import", "{file}", "--out", "{tmp}/i"], ["{file}"]),
    ("import-src-empty-dir", ["data", "import", "{empty}", "--out", "{tmp}/i"], ["{empty}"]),
    ("import-unknown-format", ["data", "import", "{empty}", "--out", "{tmp}/i", "--format", "kitti"],
     ["kitti"]),
    ("import-stride-zero", ["data", "import", "{empty}", "--out", "{tmp}/i", "--stride", "0"], ["--stride"]),
    ("import-fx-not-float", ["data", "import", "{empty}", "--out", "{tmp}/i", "--fx", "big"], ["--fx"]),
    ("import-markup-src", ["data", "import", "{tmp}/" + MARK, "--out", "{tmp}/i"], [MARK]),
    # --- data info
    ("info-missing-arg", ["data", "info"], ["PATH", "path"]),
    ("info-empty-path", ["data", "info", ""], ["empty"]),
    ("info-nonexistent", ["data", "info", "{tmp}/nope"], ["{tmp}/nope"]),
    ("info-file", ["data", "info", "{file}"], ["{file}"]),
    ("info-empty-dir", ["data", "info", "{empty}"], ["{empty}"]),
    ("info-markup-open", ["data", "info", "runs/[exp1]"], ["runs/[exp1]"]),
    ("info-markup-bold", ["data", "info", "{tmp}/" + MARK], [MARK]),
    ("info-markup-close", ["data", "info", CLOSE], [CLOSE]),
    ("info-non-ascii", ["data", "info", "{tmp}/" + UNI], [UNI]),
    ("info-garbage-json", ["data", "info", "{badjson}"], ["dataset.json"]),
    ("info-json-is-dir", ["data", "info", "{jsondir}"], ["dataset.json"]),
    ("info-symlink-loop", ["data", "info", "{loop}"], ["{loop}"]),
    # --- data verify
    ("verify-nonexistent", ["data", "verify", "{tmp}/nope"], ["{tmp}/nope"]),
    ("verify-file", ["data", "verify", "{file}"], ["{file}"]),
    ("verify-markup", ["data", "verify", "{tmp}/" + CLOSE], [CLOSE]),
    ("verify-extra-arg", ["data", "verify", "{ds}", "more"], ["more"]),
    # --- data view
    ("view-nonexistent", ["data", "view", "{tmp}/nope", "--out", "{tmp}/v.mp4"], ["{tmp}/nope"]),
    ("view-episode-out-of-range", ["data", "view", "{ds}", "--episode", "999", "--out", "{tmp}/v.mp4"],
     ["--episode"]),
    ("view-episode-negative", ["data", "view", "{ds}", "--episode", "-1", "--out", "{tmp}/v.mp4"], ["--episode"]),
    ("view-episode-not-int", ["data", "view", "{ds}", "--episode", "first", "--out", "{tmp}/v.mp4"],
     ["--episode"]),
    ("view-out-npz", ["data", "view", "{ds}", "--out", "{tmp}/y.npz"], ["{tmp}/y.npz"]),
    ("view-out-json", ["data", "view", "{ds}", "--out", "{tmp}/x.json"], ["{tmp}/x.json"]),
    ("view-out-no-suffix", ["data", "view", "{ds}", "--out", "{tmp}/video"], ["{tmp}/video"]),
    ("view-out-parent-is-file", ["data", "view", "{ds}", "--out", "{file}/v.mp4"], ["{file}"]),
    ("view-out-is-dir", ["data", "view", "{ds}", "--out", "{empty}"], ["{empty}"]),
    ("view-size-zero", ["data", "view", "{ds}", "--out", "{tmp}/v.mp4", "--size", "0"], ["--size"]),
    ("view-size-huge", ["data", "view", "{ds}", "--out", "{tmp}/v.mp4", "--size", "1000000"], ["--size"]),
    ("view-fps-negative", ["data", "view", "{ds}", "--out", "{tmp}/v.mp4", "--fps", "-8"], ["--fps"]),
    ("view-truncated-episode", ["data", "view", "{trunc}", "--out", "{tmp}/v.mp4"], ["ep_000000.npz"]),
    # --- map
    ("map-missing-out", ["map", "{ds}"], ["--out"]),
    ("map-nonexistent", ["map", "{tmp}/NONEXISTENT", "--out", "{tmp}/m"], ["{tmp}/NONEXISTENT"]),
    ("map-episode-out-of-range", ["map", "{ds}", "--episode", "999", "--out", "{tmp}/m"], ["--episode"]),
    ("map-episode-negative", ["map", "{ds}", "--episode", "-2", "--out", "{tmp}/m"], ["--episode"]),
    ("map-voxel-size-zero", ["map", "{ds}", "--voxel-size", "0", "--out", "{tmp}/m"], ["--voxel-size"]),
    ("map-voxel-size-negative", ["map", "{ds}", "--voxel-size", "-0.1", "--out", "{tmp}/m"], ["--voxel-size"]),
    ("map-voxel-size-nan", ["map", "{ds}", "--voxel-size", "nan", "--out", "{tmp}/m"], ["--voxel-size"]),
    ("map-voxel-size-not-float", ["map", "{ds}", "--voxel-size", "fine", "--out", "{tmp}/m"], ["--voxel-size"]),
    ("map-unknown-features", ["map", "{ds}", "--features", "clip", "--out", "{tmp}/m"], ["clip"]),
    ("map-dinov2-without-weights", ["map", "{ds}", "--features", "dinov2", "--out", "{tmp}/m"],
     ["--dinov2-weights"]),
    ("map-truncated-episode", ["map", "{trunc}", "--out", "{tmp}/m"], ["ep_000000.npz"]),
    ("map-out-is-file", ["map", "{ds}", "--out", "{file}"], ["{file}"]),
    ("map-out-parent-is-file", ["map", "{ds}", "--out", "{file}/m"], ["{file}"]),
    ("map-markup-dataset", ["map", "{tmp}/" + MARK, "--out", "{tmp}/m"], [MARK]),
    ("map-non-ascii-dataset", ["map", "{tmp}/" + UNI, "--out", "{tmp}/m"], [UNI]),
    # --- train
    ("train-missing-out", ["train", "--data", "{ds}"], ["--out"]),
    ("train-resume-nothing", ["train", "--out", "{tmp}/NEW", "--resume"], ["{tmp}/NEW"]),
    ("train-missing-data", ["train", "--out", "{tmp}/r"], ["--data"]),
    ("train-data-nonexistent", ["train", "--data", "{tmp}/nope", "--out", "{tmp}/r"], ["{tmp}/nope"]),
    ("train-data-is-file", ["train", "--data", "{file}", "--out", "{tmp}/r"], ["{file}"]),
    ("train-data-markup", ["train", "--data", "{tmp}/" + MARK, "--out", "{tmp}/r"], [MARK]),
    ("train-data-non-ascii", ["train", "--data", "{tmp}/" + UNI, "--out", "{tmp}/r"], [UNI]),
    ("train-unknown-preset", ["train", "--data", "{ds}", "--out", "{tmp}/r", "--preset", "huge"], ["huge"]),
    ("train-unknown-stage", ["train", "--data", "{ds}", "--out", "{tmp}/r", "--stage", "stage3"], ["stage3"]),
    ("train-unknown-reader", ["train", "--data", "{ds}", "--out", "{tmp}/r", "--reader", "telepathy"],
     ["telepathy"]),
    ("train-steps-zero", ["train", "--data", "{ds}", "--out", "{tmp}/r", "--steps", "0"], ["--steps", "steps"]),
    ("train-steps-not-int", ["train", "--data", "{ds}", "--out", "{tmp}/r", "--steps", "many"], ["--steps"]),
    ("train-batch-negative", ["train", "--data", "{ds}", "--out", "{tmp}/r", "--batch-size", "-4"],
     ["--batch-size", "batch_size"]),
    ("train-lr-negative", ["train", "--data", "{ds}", "--out", "{tmp}/r", "--lr", "-1"], ["--lr"]),
    ("train-precision-unknown", ["train", "--data", "{ds}", "--out", "{tmp}/r", "--precision", "fp8"], ["fp8"]),
    ("train-split-unknown", ["train", "--data", "{ds}", "--out", "{tmp}/r", "--split", "holdout"], ["holdout"]),
    ("train-init-nonexistent", ["train", "--data", "{ds}", "--out", "{tmp}/r", "--init", "{tmp}/noinit"],
     ["{tmp}/noinit"]),
    ("train-reader-option-malformed",
     ["train", "--data", "{ds}", "--out", "{tmp}/r", "--reader-option", "novalue"], ["--reader-option"]),
    ("train-out-is-file", ["train", "--data", "{ds}", "--out", "{file}", "--preset", "micro"], ["{file}"]),
    ("train-empty-out", ["train", "--data", "{ds}", "--out", ""], ["--out"]),
    # --- eval
    ("eval-missing-data", ["eval", "--out", "{tmp}/e"], ["--data"]),
    ("eval-data-nonexistent", ["eval", "--data", "{tmp}/nope", "--out", "{tmp}/e"], ["{tmp}/nope"]),
    ("eval-data-markup", ["eval", "--data", "{tmp}/" + CLOSE, "--out", "{tmp}/e"], [CLOSE]),
    ("eval-unknown-memory", ["eval", "--data", "{ds}", "--out", "{tmp}/e", "--memory", "psychic"], ["psychic"]),
    ("eval-seeds-zero", ["eval", "--data", "{ds}", "--out", "{tmp}/e", "--seeds", "0"], ["--seeds"]),
    ("eval-horizon-negative", ["eval", "--data", "{ds}", "--out", "{tmp}/e", "--horizon", "-8"], ["--horizon"]),
    ("eval-split-unknown", ["eval", "--data", "{ds}", "--out", "{tmp}/e", "--split", "holdout"], ["holdout"]),
    ("eval-mode-model-malformed", ["eval", "--data", "{ds}", "--out", "{tmp}/e", "--mode-model", "frames"],
     ["--mode-model"]),
    ("eval-model-nonexistent", ["eval", "--data", "{ds}", "--out", "{tmp}/e", "--model", "{tmp}/nomodel"],
     ["{tmp}/nomodel"]),
    ("eval-fuse-unknown", ["eval", "--data", "{ds}", "--out", "{tmp}/e", "--fuse", "some"], ["--fuse"]),
    ("eval-anchor-unknown", ["eval", "--data", "{ds}", "--out", "{tmp}/e", "--anchor", "glue"], ["glue"]),
    ("eval-batch-not-int", ["eval", "--data", "{ds}", "--out", "{tmp}/e", "--batch", "1.5"], ["--batch"]),
    ("eval-out-is-file", ["eval", "--data", "{ds}", "--out", "{file}"], ["{file}"]),
    ("eval-data-is-file", ["eval", "--data", "{file}", "--out", "{tmp}/e"], ["{file}"]),
    # --- demo
    ("demo-steps-zero", ["demo", "--out", "{tmp}/d", "--steps", "0"], ["--steps"]),
    ("demo-steps-huge", ["demo", "--out", "{tmp}/d", "--steps", "100000000"], ["--steps"]),
    ("demo-look-around-negative", ["demo", "--out", "{tmp}/d", "--look-around", "-1"], ["--look-around"]),
    ("demo-fuse-unknown", ["demo", "--out", "{tmp}/d", "--fuse", "some"], ["--fuse"]),
    ("demo-anchor-unknown", ["demo", "--out", "{tmp}/d", "--anchor", "glue"], ["glue"]),
    ("demo-model-nonexistent", ["demo", "--out", "{tmp}/d", "--model", "{tmp}/nomodel"], ["{tmp}/nomodel"]),
    ("demo-model-markup", ["demo", "--out", "{tmp}/d", "--model", "{tmp}/" + MARK], [MARK]),
    ("demo-sampling-steps-zero", ["demo", "--out", "{tmp}/d", "--sampling-steps", "0"], ["--sampling-steps"]),
    ("demo-threads-zero", ["demo", "--out", "{tmp}/d", "--threads", "0"], ["--threads"]),
    ("demo-out-is-file", ["demo", "--out", "{file}"], ["{file}"]),
    ("demo-seed-not-int", ["demo", "--out", "{tmp}/d", "--seed", "lucky"], ["--seed"]),
    # --- play (each refused before a server starts)
    ("play-port-huge", ["play", "--no-open", "--port", "70000"], ["--port"]),
    ("play-port-not-int", ["play", "--no-open", "--port", "http"], ["--port"]),
    ("play-sampling-steps-zero", ["play", "--no-open", "--sampling-steps", "0"], ["sampling steps"]),
    ("play-anchor-unknown", ["play", "--no-open", "--anchor", "glue"], ["glue"]),
    ("play-max-sessions-zero", ["play", "--no-open", "--max-sessions", "0"], ["--max-sessions"]),
    ("play-idle-timeout-zero", ["play", "--no-open", "--idle-timeout", "0"], ["--idle-timeout"]),
    ("play-threads-zero", ["play", "--no-open", "--threads", "0"], ["--threads"]),
    ("play-house-seed-negative", ["play", "--no-open", "--house-seed", "-3"], ["--house-seed"]),
    ("play-model-nonexistent", ["play", "--no-open", "--model", "{tmp}/nomodel"], ["{tmp}/nomodel"]),
]


def make_fixtures(root, ds) -> dict:
    """The placeholder paths of :data:`CASES`, under ``root``; ``ds`` is a small dataset."""
    tmp = root / "tmp"
    tmp.mkdir()
    (root / "afile").write_text("not a directory\n")
    (root / "empty").mkdir()
    os.symlink(root / "loop", root / "loop")
    trunc = root / "trunc"
    shutil.copytree(ds, trunc)
    ep = trunc / "episodes" / "ep_000000.npz"
    ep.write_bytes(ep.read_bytes()[: ep.stat().st_size // 2])
    (root / "badjson").mkdir()
    (root / "badjson" / "dataset.json").write_bytes(b"\x00\xff{garbage")
    (root / "jsondir" / "dataset.json").mkdir(parents=True)
    return {"ds": str(ds), "tmp": str(tmp), "file": str(root / "afile"), "empty": str(root / "empty"),
            "loop": str(root / "loop"), "trunc": str(trunc), "badjson": str(root / "badjson"),
            "jsondir": str(root / "jsondir")}


def expand(items, paths: dict) -> list[str]:
    return [s.format(**paths) for s in items]


def judge(exit_code: int, output: str, culprits: list[str]) -> list[str]:
    """What is wrong with one answer (empty: exit 2, no traceback, the culprit named)."""
    bad = []
    if exit_code != 2:
        bad.append(f"exit code {exit_code}")
    if "Traceback" in output:
        bad.append("traceback")
    if not any(c in output for c in culprits):
        bad.append(f"none of {culprits} named")
    return bad


@pytest.fixture(scope="module")
def paths(small_dataset, tmp_path_factory):
    return make_fixtures(tmp_path_factory.mktemp("adv"), small_dataset[0])


def invoke(args, **kw):
    r = runner.invoke(app, args, terminal_width=200, **kw)
    crashed = r.exception is not None and not isinstance(r.exception, SystemExit)
    return r.exit_code, r.output + ("\nTraceback (uncaught %r)" % r.exception if crashed else "")


def test_the_table_is_large_and_covers_every_command():
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)
    firsts = {" ".join(a[:2]) if a[0] == "data" else a[0] for _, a, _ in CASES}
    for cmd in ("data generate", "data import", "data info", "data verify", "data view", "map", "train", "eval",
                "demo", "play", "version"):
        assert cmd in firsts, cmd


@pytest.mark.parametrize("name,args,culprits", CASES, ids=[c[0] for c in CASES])
def test_malformed_invocation(paths, name, args, culprits, monkeypatch):
    monkeypatch.chdir(paths["tmp"])  # a command that wrongly writes "." writes into scratch
    code, out = invoke(expand(args, paths))
    assert not judge(code, out, expand(culprits, paths)), out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert lines[0].startswith("error: ") and len(lines) <= 2, out  # one style: one or two plain lines


# --- runs are never overwritten: existing output refused (naming --overwrite) unless --overwrite

def _refused(args, *untouched):
    before = {p: p.read_bytes() for p in untouched}
    code, out = invoke(args)
    assert code == 2 and "--overwrite" in out and "Traceback" not in out, out
    assert out.startswith("error: ") and len(out.strip().splitlines()) <= 2, out
    assert all(p.read_bytes() == b for p, b in before.items())  # nothing was touched
    return out


def test_train_refuses_a_finished_run_without_checkpoints(small_dataset, tmp_path):
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.json").write_text("{}")
    (run / "config.json").write_text('{"old": true}')
    (run / "metrics.jsonl").write_text('{"step": 10, "loss": 1.0}\n')
    (run / "samples").mkdir()
    (run / "samples" / "step_000010.mp4").write_bytes(b"old")
    args = ["train", "--preset", "micro", "--data", str(small_dataset[0]), "--out", str(run), "--steps", "1",
            "--no-progress"]
    out = _refused(args, run / "config.json", run / "metrics.jsonl", run / "model" / "config.json")
    assert "model/" in out and "metrics.jsonl" in out
    code, out = invoke(args + ["--overwrite"])
    assert code == 0, out
    assert '"old"' not in (run / "config.json").read_text()
    assert not (run / "samples" / "step_000010.mp4").exists()  # nothing of the old run is mixed in
    assert [ln for ln in (run / "metrics.jsonl").read_text().splitlines() if '"step": 10,' in ln] == []
    code, out = invoke(args + ["--overwrite", "--resume"])
    assert code == 2 and "--overwrite" in out and "--resume" in out, out


def test_eval_refuses_earlier_results(small_dataset, tmp_path):
    out_dir = tmp_path / "eval"
    (out_dir / "videos").mkdir(parents=True)
    (out_dir / "results.json").write_text("{}")
    args = ["eval", "--data", str(small_dataset[0]), "--out", str(out_dir), "--memory", "none",
            "--model", str(tmp_path / "nomodel")]
    _refused(args, out_dir / "results.json")
    code, out = invoke(args + ["--overwrite"])  # past the output check: the next error is the missing model
    assert code == 2 and "nomodel" in out and "--overwrite" not in out, out


def test_demo_refuses_earlier_output(tmp_path):
    out_dir = tmp_path / "demo"
    out_dir.mkdir()
    (out_dir / "summary.json").write_text("{}")
    args = ["demo", "--out", str(out_dir), "--model", str(tmp_path / "nomodel")]
    _refused(args, out_dir / "summary.json")
    code, out = invoke(args + ["--overwrite"])  # past the output check: the next error is the missing model
    assert code == 2 and "nomodel" in out and "--overwrite" not in out, out


def test_map_refuses_an_earlier_map(small_dataset, tmp_path):
    out_dir = tmp_path / "map"
    out_dir.mkdir()
    (out_dir / "map.ply").write_bytes(b"old")
    args = ["map", str(small_dataset[0]), "--out", str(out_dir)]
    _refused(args, out_dir / "map.ply")
    code, out = invoke(args + ["--overwrite"])
    assert code == 0, out
    assert (out_dir / "map.ply").read_bytes() != b"old" and (out_dir / "map.safetensors").is_file()


def test_data_view_refuses_an_existing_video(small_dataset, tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"old")
    args = ["data", "view", str(small_dataset[0]), "--out", str(video), "--size", "32"]
    _refused(args, video)
    code, out = invoke(args + ["--overwrite"])
    assert code == 0, out
    assert video.read_bytes() != b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]  # no temp file left


def test_bad_video_extension_leaves_no_temp_file(tmp_path):
    from pewm.video import write_video

    with pytest.raises(ValueError, match=r"\.npz"):
        write_video(tmp_path / "y.npz", [], fps=8)
    assert list(tmp_path.iterdir()) == []


def test_check_output_dir(tmp_path):
    from pewm.outputs import check_output_dir

    assert check_output_dir(tmp_path / "new", ["a"]) == []
    (tmp_path / "run" / "sub").mkdir(parents=True)
    (tmp_path / "run" / "a").write_text("x")
    (tmp_path / "run" / "keep").write_text("x")
    with pytest.raises(ValueError, match="--overwrite"):
        check_output_dir(tmp_path / "run", ["a", "sub", "b"])
    assert len(check_output_dir(tmp_path / "run", ["a", "sub", "b"], overwrite=True)) == 2
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["keep"]  # only the artefacts go
    with pytest.raises(ValueError, match="is a file"):
        check_output_dir(tmp_path / "run" / "keep" / "x", ["a"])


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    args = ["data", "info", str(tmp_path / "x[/red]y")]
    code, out = invoke(args)
    assert code == 2 and "Traceback" not in out and "x[/red]y" in out
    r = runner.invoke(app, ["--debug"] + args)
    assert r.exception is not None and not isinstance(r.exception, SystemExit)  # raised: python prints it
    monkeypatch.setenv("PEWM_DEBUG", "1")
    r = runner.invoke(app, args)
    assert r.exception is not None and not isinstance(r.exception, SystemExit)
    r = runner.invoke(app, ["--help"], terminal_width=200)
    assert "--debug" in r.output and "PEWM_DEBUG" in r.output


def test_unexpected_errors_are_one_line_without_traceback(monkeypatch, tmp_path):
    import pewm.eval.episode_video as ev

    def boom(*a, **k):
        raise TypeError("something internal")

    monkeypatch.setattr(ev, "write_episode_video", boom)
    code, out = invoke(["data", "view", str(tmp_path), "--out", str(tmp_path / "v.mp4")])
    assert code == 1 and "Traceback" not in out
    assert out.startswith("error: unexpected TypeError: something internal") and "--debug" in out, out
