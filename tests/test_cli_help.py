"""`pewm --help` and every command's help are plain text: defaults written as "[default: 525]"
survive (they used to be eaten as Rich markup), and every command documents its options."""

import pytest
from typer.testing import CliRunner

from pewm.cli.main import app

COMMANDS = [["--help"], ["data", "--help"], ["data", "generate", "--help"], ["data", "import", "--help"],
            ["data", "export", "--help"], ["data", "info", "--help"], ["data", "verify", "--help"],
            ["data", "view", "--help"], ["map", "--help"], ["train", "--help"], ["eval", "--help"],
            ["demo", "--help"], ["play", "--help"]]


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(a[:-1]) or "pewm" for a in COMMANDS])
def test_help_is_plain_text_with_its_defaults(args):
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "Usage:" in r.output and "Traceback" not in r.output


def test_bracketed_defaults_survive():
    out = CliRunner().invoke(app, ["data", "import", "--help"]).output
    for text in ("[default: 525]", "[default: 319.5]", "5000"):
        assert text in out, text
    assert "--debug" in CliRunner().invoke(app, ["--help"]).output
