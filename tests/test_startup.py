"""#14: commands that need no tensors start without torch (`pewm --help`, `pewm data info`,
`pewm data import`: <= 0.5 s before work begins; ``benchmarks/import_speed.py`` measures it), and
the thread policy of :mod:`pewm.model.threads`."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from pewm.model.threads import DEFAULT_THREADS, ENV_VAR, resolve_threads, set_threads

NO_TORCH = "import sys; {stmt}; assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]"


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("stmt", ["import pewm.geometry", "import pewm.data", "import pewm.cli.main"])
def test_importing_does_not_load_torch(stmt):
    r = _python(NO_TORCH.format(stmt=stmt))
    assert r.returncode == 0, r.stderr


CLI_NO_TORCH = """
import sys
from pewm.cli.main import main
sys.argv = ["pewm", *sys.argv[1:]]
try:
    main()
except SystemExit as e:
    assert not e.code, e.code
assert 'torch' not in sys.modules, "this command loaded torch"
"""


def _tiny_recording(root):
    """A 3-frame folder recording (no simulator): what `pewm data import --format folder` reads."""
    from pewm.data import Episode, export_folder
    from pewm.geometry import Intrinsics, make_pose

    rng = np.random.default_rng(0)
    poses = np.stack([make_pose(np.eye(3), np.array([0.1 * i, 0.0, 0.0])) for i in range(3)])
    ep = Episode.create(rng.integers(0, 255, (3, 16, 16, 3), dtype=np.uint8), rng.uniform(1, 3, (3, 16, 16)),
                        poses, None, Intrinsics(16.0, 16.0, 7.5, 7.5, 16, 16), split="test")
    return export_folder(ep, root / "rec")


def test_data_commands_do_not_load_torch(tmp_path):
    src = _tiny_recording(tmp_path)
    out = tmp_path / "ds"
    for args in (["--help"], ["data", "--help"], ["data", "import", str(src), "--out", str(out), "--format", "folder"],
                 ["data", "info", str(out)]):
        r = _python(CLI_NO_TORCH, *args)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    assert (out / "dataset.json").is_file()


def test_thread_policy(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_threads() == DEFAULT_THREADS == 1
    assert resolve_threads(3) == 3 and resolve_threads("2") == 2
    assert resolve_threads("auto") is None and resolve_threads(0) is None
    monkeypatch.setenv(ENV_VAR, "4")
    assert resolve_threads() == 4 and resolve_threads(2) == 2  # an explicit number wins
    monkeypatch.setenv(ENV_VAR, "auto")
    assert resolve_threads() is None
    for bad in ("many", "-1", "1.5"):
        monkeypatch.setenv(ENV_VAR, bad)
        with pytest.raises(ValueError, match=ENV_VAR):
            resolve_threads()
    with pytest.raises(ValueError, match="threads"):
        resolve_threads(-2)
    old = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 == torch.get_num_threads()
        assert set_threads("auto") == 1  # auto leaves torch's setting as it is
    finally:
        torch.set_num_threads(old)
