"""A dataset knows what it should contain: the manifest, the corruption matrix `verify` must name
(each kind of damage an error naming the file, and `pewm data verify` exits non-zero), and the
completeness check that `train` and `eval` run before they start (--allow-incomplete)."""

import hashlib
import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from pewm.cli.main import app
from pewm.data import Manifest, completeness_problems, open_dataset, require_complete, verify_dataset
from pewm.model import WorldModel
from pewm.sim.generate import GenerateConfig, generate_dataset

CFG = GenerateConfig(houses=3, episodes_per_house=2, steps=6, seed=5)  # 6 episodes: train 0-1, val 2-3, test 4-5
runner = CliRunner()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    out = tmp_path_factory.mktemp("integrity") / "ds"
    generate_dataset(out, CFG)
    return out


def _copy(pristine, tmp_path):
    return shutil.copytree(pristine, tmp_path / "ds")


def _digests(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "dataset.json"}


def _edit_manifest(root, fn):
    m = json.loads((root / "manifest.json").read_text())
    fn(m)
    (root / "manifest.json").write_text(json.dumps(m))


def _flip(path, at=0.5):
    b = bytearray(path.read_bytes())
    b[int(len(b) * at)] ^= 0xFF
    path.write_bytes(bytes(b))


def _truncate(path, keep=0.5):
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


def _swap(a, b):
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)


# name: (damage(root), file the error must name, problem kind, found by the cheap check train/eval run)
CORRUPTIONS = {
    "delete first episode": (lambda r: (r / "episodes/ep_000000.npz").unlink(), "ep_000000.npz", "missing_episode", True),
    "delete middle episode": (lambda r: (r / "episodes/ep_000003.npz").unlink(), "ep_000003.npz", "missing_episode", True),
    "delete last episode": (lambda r: (r / "episodes/ep_000005.npz").unlink(), "ep_000005.npz", "missing_episode", True),
    "empty episodes dir": (lambda r: [p.unlink() for p in (r / "episodes").iterdir()], "episodes", "no_episodes", True),
    "no episodes dir": (lambda r: shutil.rmtree(r / "episodes"), "episodes", "no_episodes", True),
    "truncated episode": (lambda r: _truncate(r / "episodes/ep_000001.npz"), "ep_000001.npz", "size_mismatch", True),
    "truncated episode (full read)": (lambda r: _truncate(r / "episodes/ep_000001.npz", 0.9), "ep_000001.npz",
                                      "truncated", True),
    "episode replaced by text": (lambda r: (r / "episodes/ep_000003.npz").write_text("not an episode"), "ep_000003.npz",
                                 "unreadable", True),
    "flipped bytes in an episode": (lambda r: _flip(r / "episodes/ep_000002.npz"), "ep_000002.npz",
                                    "checksum_mismatch", False),
    "flipped byte in the zip directory": (lambda r: _flip(r / "episodes/ep_000004.npz", 0.999), "ep_000004.npz",
                                          "unreadable", False),
    "episodes swapped": (lambda r: _swap(r / "episodes/ep_000000.npz", r / "episodes/ep_000001.npz"), "ep_000000.npz",
                         "size_mismatch", True),
    "wrong checksum in manifest": (lambda r: _edit_manifest(r, lambda m: m["episodes"]["ep_000004.npz"].update(
        sha256="0" * 64)), "ep_000004.npz", "checksum_mismatch", False),
    "unfinished entry in manifest": (lambda r: _edit_manifest(r, lambda m: m["episodes"]["ep_000001.npz"].update(
        sha256=None, bytes=None)), "ep_000001.npz", "unfinished", True),
    "wrong split in manifest": (lambda r: _edit_manifest(r, lambda m: m["episodes"]["ep_000000.npz"].update(
        split="test")), "ep_000000.npz", "split_mismatch", False),
    "manifest entry missing": (lambda r: _edit_manifest(r, lambda m: m["episodes"].pop("ep_000002.npz")),
                               "ep_000002.npz", "unexpected_file", True),
    "extra episode": (lambda r: shutil.copy(r / "episodes/ep_000000.npz", r / "episodes/ep_000006.npz"),
                      "ep_000006.npz", "unexpected_file", True),
    "stray file in episodes": (lambda r: (r / "episodes/readme.txt").write_text("x"), "readme.txt", "stray_file", True),
    "stray file in root": (lambda r: (r / "notes.txt").write_text("x"), "notes.txt", "stray_file", True),
    "stray directory in root": (lambda r: (r / "old").mkdir(), "old", "stray_file", True),
    ".tmp in episodes": (lambda r: (r / "episodes/.ep_000001.npz.k3j2.tmp").write_bytes(b"half"),
                         ".ep_000001.npz.k3j2.tmp", "temp_file", True),
    ".tmp in houses": (lambda r: (r / "houses/.house_0001.json.a8f.tmp").write_bytes(b"{"), ".house_0001.json.a8f.tmp",
                       "temp_file", True),
    ".tmp in root": (lambda r: (r / ".manifest.json.x1.tmp").write_text("{"), ".manifest.json.x1.tmp", "temp_file",
                     True),
    "garbage house json": (lambda r: (r / "houses/house_0000.json").write_text("garbage{"), "house_0000.json",
                           "house_invalid", True),
    "house json not an object (same size)": (
        lambda r: (r / "houses/house_0001.json").write_text("[" + " " * ((r / "houses/house_0001.json").stat().st_size
                                                                         - 2) + "]"),
        "house_0001.json", "house_invalid", False),
    "missing house json": (lambda r: (r / "houses/house_0002.json").unlink(), "house_0002.json", "missing_house", True),
    "extra house json": (lambda r: (r / "houses/house_0007.json").write_text("{}"), "house_0007.json",
                         "unexpected_file", True),
    "missing manifest": (lambda r: (r / "manifest.json").unlink(), "manifest.json", "manifest_missing", True),
    "manifest garbage": (lambda r: (r / "manifest.json").write_text("{not json"), "manifest.json", "manifest_invalid",
                         True),
    "manifest of another format": (lambda r: _edit_manifest(r, lambda m: m.update(format_version=99)), "manifest.json",
                                   "manifest_invalid", True),
    "dataset.json garbage": (lambda r: (r / "dataset.json").write_text("garbage"), "dataset.json", "dataset_json", True),
}


def test_a_generated_dataset_is_clean_and_its_manifest_lists_everything(pristine):
    assert verify_dataset(pristine) == [] and completeness_problems(pristine) == []
    m = open_dataset(pristine).load_manifest()
    assert sorted(m.episodes) == [f"ep_{i:06d}.npz" for i in range(6)]
    assert [m.episodes[f"ep_{i:06d}.npz"].split for i in range(6)] == ["train"] * 2 + ["val"] * 2 + ["test"] * 2
    assert sorted(m.houses) == ["house_0000.json", "house_0001.json", "house_0002.json"] and not m.pending()
    r = runner.invoke(app, ["data", "verify", str(pristine)])
    assert r.exit_code == 0 and "ok" in r.output


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_verify_names_every_kind_of_damage(pristine, tmp_path, name):
    damage, culprit, kind, cheap = CORRUPTIONS[name]
    root = _copy(pristine, tmp_path)
    damage(root)
    problems = verify_dataset(root)
    assert all(p.severity == "error" for p in problems if p.kind != "split_leak")
    hits = [p for p in problems if p.path.name == culprit and p.kind == kind]
    assert hits, f"{name}: expected a {kind} error naming {culprit}, got {[str(p) for p in problems]}"
    r = runner.invoke(app, ["data", "verify", str(root)], terminal_width=400)
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    line = next(ln for ln in r.output.splitlines() if culprit in ln)
    assert line.startswith("error"), line
    if cheap:  # the cheap check train/eval run (no episode opened) finds what file names and sizes show
        assert completeness_problems(root)


def test_the_matrix_covers_at_least_15_kinds():
    assert len(CORRUPTIONS) >= 15 and len({kind for _, _, kind, _ in CORRUPTIONS.values()}) >= 15


def test_a_dataset_without_manifest_is_an_error_with_a_hint_and_a_rerun_adds_it(pristine, tmp_path):
    root = _copy(pristine, tmp_path)
    before = _digests(root)
    (root / "manifest.json").unlink()  # as written by pewm before manifests existed
    (p,) = verify_dataset(root)
    assert p.kind == "manifest_missing" and "pewm data generate" in p.reason
    res = generate_dataset(root, CFG)  # the hint: rerun the same command
    assert res["generated"] == 0 and _digests(root) == before


def test_interrupted_generation_is_recognisably_incomplete_and_resumes_to_the_same_bytes(pristine, tmp_path):
    out = tmp_path / "ds"

    def stop_after_two(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_dataset(out, CFG, on_progress=stop_after_two)
    m = Manifest.load(out / "manifest.json")  # written before the first episode
    assert len(m.episodes) == 6 and len(m.pending()) == 4
    missing = {p.path.name for p in verify_dataset(out) if p.kind == "missing_episode"}
    assert missing == {f"ep_{i:06d}.npz" for i in range(2, 6)}
    with pytest.raises(ValueError, match=r"incomplete dataset: .*ep_000002\.npz: missing.*--allow-incomplete"):
        require_complete(out)
    assert not list(out.rglob("*.tmp"))
    assert generate_dataset(out, CFG)["generated"] == 4
    assert _digests(out) == _digests(pristine)


def test_generate_refuses_a_directory_that_is_not_a_dataset(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    with pytest.raises(ValueError, match="not empty and not a pewm dataset.*thesis.tex"):
        generate_dataset(tmp_path / "mine", GenerateConfig(houses=1, episodes_per_house=1, steps=2))
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["thesis.tex"]


def test_import_into_an_existing_dataset_names_the_overwrite_option(tmp_path):
    from test_data_tum import write_tum

    src = write_tum(tmp_path / "seq")
    out = tmp_path / "imported"
    assert runner.invoke(app, ["data", "import", str(src), "--out", str(out), "--fx", "20", "--fy", "20"]).exit_code == 0
    r = runner.invoke(app, ["data", "import", str(src), "--out", str(out)], terminal_width=400)
    assert r.exit_code == 2 and "--overwrite" in r.output and "exist_ok" not in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["data", "import", str(src), "--out", str(out), "--overwrite", "--max-frames", "2"])
    assert r.exit_code == 0, r.output
    assert open_dataset(out).read_info(0).num_frames == 2 and verify_dataset(out) == []


# -- train and eval refuse an incomplete dataset unless --allow-incomplete ------------------------------------------
@pytest.fixture
def incomplete(small_dataset, tmp_path):
    """small_dataset (train/val/test one episode each) with its val episode gone."""
    root = shutil.copytree(small_dataset[0], tmp_path / "incomplete")
    (root / "episodes" / "ep_000001.npz").unlink()
    return root


def _one_line_refusal(r, root):
    assert r.exit_code == 2, r.output
    text = r.output.strip()
    assert "Traceback" not in text
    assert str(root) in text and "ep_000001.npz" in text and "--allow-incomplete" in text
    assert len(text.splitlines()) == 1, text


def test_train_refuses_an_incomplete_dataset_unless_allowed(incomplete, tmp_path):
    args = ["train", "--preset", "micro", "--data", str(incomplete), "--out", str(tmp_path / "run"), "--steps", "1",
            "--no-progress"]
    r = runner.invoke(app, args, terminal_width=1000)
    _one_line_refusal(r, incomplete)
    assert not (tmp_path / "run").exists()
    r = runner.invoke(app, args + ["--allow-incomplete"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run" / "model").is_dir()


def test_eval_refuses_an_incomplete_dataset_unless_allowed(incomplete, tmp_path):
    torch.manual_seed(0)
    WorldModel.from_preset("micro", reader="voxel-render").save_pretrained(tmp_path / "model")
    args = ["eval", "--data", str(incomplete), "--model", str(tmp_path / "model"), "--memory", "none",
            "--out", str(tmp_path / "eval"), "--seeds", "1", "--horizon", "2", "--min-history", "8", "--batch", "1",
            "--sampling-steps", "1", "--videos", "0", "--split", "test"]
    r = runner.invoke(app, args, terminal_width=1000)
    _one_line_refusal(r, incomplete)
    assert not (tmp_path / "eval" / "results.json").exists()
    r = runner.invoke(app, args + ["--allow-incomplete"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["_meta"]["episodes"] == 1
