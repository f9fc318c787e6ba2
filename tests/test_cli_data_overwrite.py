"""Issue #15 for ``data generate``, ``data export`` and ``data import``: existing output is resumed
(generate, same arguments) or refused naming ``--overwrite``; with it, only the command's own
files are replaced. Import's progress bar is the CLI's (user paths never read as markup)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from pewm.cli.main import app

runner = CliRunner()


def invoke(*args):
    r = runner.invoke(app, [str(a) for a in args], terminal_width=200)
    crashed = r.exception is not None and not isinstance(r.exception, SystemExit)
    return r.exit_code, r.output + ("\nTraceback (uncaught %r)" % r.exception if crashed else "")


def _one_error(code, out, *needles):
    assert code == 2 and "Traceback" not in out, out
    assert out.startswith("error: ") and len(out.strip().splitlines()) <= 2, out
    for n in needles:
        assert n in out, out


def test_generate_refuses_other_arguments_unless_overwrite(tmp_path):
    out = tmp_path / "g"
    tiny = ["data", "generate", "--out", out, "--houses", "1", "--episodes-per-house", "1", "--steps", "4",
            "--resolution", "64"]
    code, text = invoke(*tiny)
    assert code == 0, text
    before = (out / "dataset.json").read_bytes()
    code, text = invoke(*tiny)  # the same arguments resume (nothing to do)
    assert code == 0 and "1 already there" in text, text
    other = list(tiny)
    other[other.index("--steps") + 1] = "5"
    _one_error(*invoke(*other), "--overwrite", "steps")
    assert (out / "dataset.json").read_bytes() == before  # nothing touched
    (out / "notes.txt").write_text("mine")
    _one_error(*invoke(*other, "--overwrite"), "notes.txt")  # not only a dataset: refused, kept
    assert (out / "dataset.json").read_bytes() == before and (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    code, text = invoke(*other, "--overwrite")
    assert code == 0 and "1 generated" in text, text
    assert json.loads((out / "dataset.json").read_text())["generator"]["steps"] == 5
    assert invoke("data", "verify", out)[0] == 0


def test_export_overwrite_and_option_errors(small_dataset, tmp_path):
    ds, rec = small_dataset[0], tmp_path / "rec"
    code, text = invoke("data", "export", ds, "--out", rec, "--format", "folder")
    assert code == 0, text
    _one_error(*invoke("data", "export", ds, "--out", rec, "--format", "tum"), "--overwrite")
    assert (rec / "poses.txt").is_file()
    code, text = invoke("data", "export", ds, "--out", rec, "--format", "tum", "--overwrite")
    assert code == 0, text
    assert sorted(p.name for p in rec.iterdir()) == ["depth", "depth.txt", "groundtruth.txt", "rgb", "rgb.txt"]
    (rec / "notes.txt").write_text("mine")
    _one_error(*invoke("data", "export", ds, "--out", rec, "--format", "tum", "--overwrite"), "notes.txt")
    assert (rec / "notes.txt").read_text() == "mine" and (rec / "rgb.txt").is_file()
    _one_error(*invoke("data", "export", ds, "--out", tmp_path / "r2", "--format", "folder", "--axes", "vulkan"),
               "--axes", "vulkan")
    _one_error(*invoke("data", "export", ds, "--out", tmp_path / "r2", "--format", "folder",
                       "--pose-convention", "c2c"), "--pose-convention")
    _one_error(*invoke("data", "export", ds, "--out", tmp_path / "r2", "--format", "tum", "--axes", "opengl"),
               "--axes applies to --format folder only")
    _one_error(*invoke("data", "export", ds, "--out", tmp_path / "r2", "--format", "scannet",
                       "--pose-convention", "w2c"), "--pose-convention applies to --format folder only")
    assert not (tmp_path / "r2").exists()


def test_import_markup_named_source_and_no_progress_line(small_dataset, tmp_path):
    rec = tmp_path / "[red]rec"
    code, text = invoke("data", "export", small_dataset[0], "--out", rec, "--format", "folder")
    assert code == 0 and "[red]rec" in text, text
    code, text = invoke("data", "import", rec, "--out", tmp_path / "ok", "--format", "folder", "--max-frames", 4)
    assert code == 0 and "[red]rec" in text and "importing" not in text and "\x1b" not in text, text
    bad = sorted((rec / "rgb").iterdir())[2]
    bad.write_bytes(bad.read_bytes()[:60])  # header intact: the error comes while the frames are written
    code, text = invoke("data", "import", rec, "--out", tmp_path / "bad", "--format", "folder")
    _one_error(code, text, "[red]rec", bad.name)
    assert "importing" not in text and "\x1b" not in text, text
    assert not (tmp_path / "bad" / "dataset.json").exists()


def test_importers_report_progress_through_the_callback(small_dataset, tmp_path):
    from pewm.data import export_episode, import_folder, open_dataset

    export_episode(open_dataset(small_dataset[0]).read(0), tmp_path / "rec", "folder")
    seen = []
    rep = import_folder(tmp_path / "rec", tmp_path / "out", max_frames=3, on_progress=lambda d, n: seen.append((d, n)))
    assert rep.num_frames == 3 and seen[0] == (0, 6) and seen[-1] == (6, 6)
