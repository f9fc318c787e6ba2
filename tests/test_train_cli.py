"""``pewm train``: help, a short run, resume from the saved config, clear errors."""

import json

import pytest
from typer.testing import CliRunner

from pewm.cli.main import app
from pewm.model import WorldModel
from pewm.model.testing import torch_threads

runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


def test_help_lists_the_main_options():
    r = runner.invoke(app, ["train", "--help"], terminal_width=200)
    assert r.exit_code == 0
    for opt in ("--preset", "--data", "--stage", "--reader", "--out", "--init", "--resume", "--steps",
                "--batch-size", "--precision"):
        assert opt in r.output, opt


def test_train_then_resume_with_more_steps(small_dataset, tmp_path):
    root, _ = small_dataset
    out = tmp_path / "run"
    args = ["train", "--preset", "micro", "--data", str(root), "--out", str(out), "--steps", "2",
            "--checkpoint-every", "2", "--no-progress"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert WorldModel.from_pretrained(out / "model").config.reader == "voxel-xattn"
    r = runner.invoke(app, ["train", "--out", str(out), "--resume", "--steps", "3", "--no-progress"])
    assert r.exit_code == 0, r.output
    steps = [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert json.loads((out / "config.json").read_text())["steps"] == 3
    # stage 2 from the run, with another reader
    r = runner.invoke(app, ["train", "--preset", "micro", "--data", str(root), "--out", str(tmp_path / "s2"),
                            "--stage", "memory", "--reader", "frames", "--init", str(out), "--steps", "1",
                            "--no-progress"])
    assert r.exit_code == 0, r.output
    assert WorldModel.from_pretrained(tmp_path / "s2" / "model").config.reader == "frames"
    # stage 2 with imagined memories and memory settings saved with the model
    r = runner.invoke(app, ["train", "--preset", "micro", "--data", str(root), "--out", str(tmp_path / "s2i"),
                            "--stage", "memory", "--reader", "voxel-render", "--init", str(out), "--steps", "1",
                            "--imagined-memory", "1", "--imagined-memory-steps", "1", "--memory-option",
                            "imagined_fuse_delay_chunks=0", "--memory-option", "render_supersample=2", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert WorldModel.from_pretrained(tmp_path / "s2i" / "model").memory_build["render_supersample"] == 2
    saved = json.loads((tmp_path / "s2i" / "config.json").read_text())
    assert saved["imagined_memory"] == 1.0 and saved["memory"]["imagined_fuse_delay_chunks"] == 0
    assert "imagined_share" in (tmp_path / "s2i" / "metrics.jsonl").read_text()
    # stage 2 of the paper's reader reading its map cell by cell (fine feature voxels)
    r = runner.invoke(app, ["train", "--preset", "micro", "--data", str(root), "--out", str(tmp_path / "s2c"),
                            "--stage", "memory", "--reader", "voxel-xattn", "--init", str(out), "--steps", "1",
                            "--reader-option", "cell_tokens=2", "--memory-option", "feature_voxel=[0.1,0.1,0.1]",
                            "--memory-option", "extractor=rgb", "--no-progress"])
    assert r.exit_code == 0, r.output
    cells = WorldModel.from_pretrained(tmp_path / "s2c" / "model")
    assert cells.config.reader_options["cell_tokens"] == 2 and cells.memory_build["feature_voxel"] == [0.1, 0.1, 0.1]
    r = runner.invoke(app, ["train", "--preset", "micro", "--data", str(root), "--out", str(tmp_path / "bad"),
                            "--stage", "memory", "--init", str(out), "--memory-option", "colour=red"],
                      terminal_width=200)
    assert r.exit_code == 2 and "--memory-option colour=red: unknown setting 'colour'" in r.output, r.output
    # what the weights were built as cannot change on resume; the error names the flag and both values
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "s2"), "--resume", "--steps", "2", "--no-progress",
                            "--memory-init", "zero-out"], terminal_width=200)
    assert r.exit_code == 2, r.output
    assert "was started with no --reader-option" in r.output.replace("\n", " ")
    assert "cannot continue with --reader-option {'init': 'zero-out'}" in r.output.replace("\n", " ")
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "s2"), "--resume", "--steps", "2", "--no-progress",
                            "--reader", "none"], terminal_width=200)
    assert r.exit_code == 2, r.output
    assert "was started with --reader 'frames'" in r.output.replace("\n", " ")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--data", "/nonexistent/ds"], "no such dataset directory"),
        (["--reader", "voxel"], "unknown memory reader"),
        (["--preset", "huge"], "unknown training preset"),
        (["--stage", "memory"], "needs --init"),
        (["--resume"], "there is no run to resume in --out"),
        (["--precision", "fp8"], "unknown precision"),
        (["--features", "dinov2"], "--dinov2-weights"),
        (["--memory-init", "zero-out"], "reader options (['init']) are for --stage memory"),
        (["--reader-option", "init=zero-out"], "reader options (['init']) are for --stage memory"),
        (["--ray-query"], "reader options (['ray_query']) are for --stage memory"),
        (["--ray-bias", "0.5"], "reader options (['ray_bias']) are for --stage memory"),
        (["--stage", "memory", "--init", "INIT", "--reader", "frames", "--ray-query"],
         "the frames reader has no option(s) ['ray_query']"),
        (["--stage", "memory", "--init", "INIT", "--reader", "frames", "--reader-option", "ray_bias=0.5"],
         "--reader-option ray_bias: the frames reader has no such option"),
        (["--stage", "memory", "--init", "INIT", "--reader-option", "ray_query=maybe"],
         "--reader-option ray_query: expected true or false, got 'maybe'"),
        (["--stage", "memory", "--init", "INIT", "--ray-bias", "-1"],
         "voxel-xattn reader option ray_bias must be a length >= 0 in metres, got -1.0"),
        (["--stage", "memory", "--init", "INIT", "--memory-init", "zero"],
         "voxel-xattn reader option init must be one of ('zero-gate', 'zero-out'), got 'zero'"),
    ],
)
def test_errors_exit_2_with_a_message(small_dataset, tmp_path, extra, message):
    root, _ = small_dataset
    args = ["train", "--preset", "micro", "--data", str(root), "--out", str(tmp_path / "r"), "--steps", "1",
            "--no-progress"]
    if extra[0] == "--preset":
        args[2] = extra[1]
        extra = []
    extra = [str(tmp_path / "no_run") if e == "INIT" else e for e in extra]  # errors come before --init is read
    r = runner.invoke(app, args + extra, terminal_width=200)
    assert r.exit_code == 2, r.output
    assert message in r.output.replace("\n", " ")
