"""The `pewm data` commands as a user runs them (typer's CliRunner, same process)."""

import json

import imageio.v2 as imageio
from typer.testing import CliRunner

from pewm.cli.main import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_generate_info_verify_view(tmp_path):
    out = tmp_path / "houses"
    r = run("data", "generate", "--out", out, "--houses", 2, "--episodes-per-house", 1, "--steps", 8)
    assert r.exit_code == 0, r.output
    assert "2 episodes (2 generated" in r.output
    r = run("data", "generate", "--out", out, "--houses", 2, "--episodes-per-house", 1, "--steps", 8)
    assert "0 generated, 2 already there" in r.output

    r = run("data", "info", out, "--json")
    assert r.exit_code == 0
    info = json.loads(r.stdout)
    assert info["num_episodes"] == 2 and info["num_frames"] == 18

    r = run("data", "verify", out)
    assert r.exit_code == 0 and "ok" in r.output

    video = tmp_path / "ep0.mp4"
    r = run("data", "view", out, "--episode", 0, "--out", video, "--size", 64)
    assert r.exit_code == 0, r.output
    frames = imageio.mimread(video)
    assert len(frames) == 9
    assert frames[0].shape[0] == 64 and frames[0].shape[1] > 3 * 64  # rgb | depth | top-down

    # damage an episode: verify names it and fails
    ep = out / "episodes" / "ep_000001.npz"
    ep.write_bytes(ep.read_bytes()[:-300])
    r = run("data", "verify", out)
    assert r.exit_code == 1
    assert "ep_000001.npz" in r.output


def test_errors_are_one_line_and_name_the_path(tmp_path):
    missing = tmp_path / "nope"
    r = run("data", "info", missing)
    assert r.exit_code == 2
    assert "nope" in r.output and "Traceback" not in r.output
    r = run("data", "generate", "--out", tmp_path / "x", "--steps", 0)
    assert r.exit_code == 2 and "--steps" in r.output
    r = run("data", "import", tmp_path, "--out", tmp_path / "y", "--format", "kitti")
    assert r.exit_code == 2 and "kitti" in r.output


def test_import_tum(tmp_path):
    from test_data_tum import write_tum

    src = tmp_path / "tum"
    write_tum(src)
    out = tmp_path / "imported"
    r = run("data", "import", src, "--out", out, "--fx", 20, "--fy", 20, "--cx", 7.5, "--cy", 5.5)
    assert r.exit_code == 0, r.output
    r = run("data", "verify", out)
    assert r.exit_code == 0, r.output
    info = json.loads(run("data", "info", out, "--json").stdout)
    assert info["num_episodes"] == 1 and info["num_frames"] > 1
