"""The ``pewm`` command. Thin: it parses arguments and calls the packages."""

from __future__ import annotations

import typer

from pewm.cli.common import DEBUG_ENV, PewmGroup
from pewm.cli.data_cmd import data_app
from pewm.cli.demo_cmd import register as register_demo
from pewm.cli.eval_cmd import register as register_eval
from pewm.cli.map_cmd import register as register_map
from pewm.cli.plan_cmd import register as register_plan
from pewm.cli.play_cmd import register as register_play
from pewm.cli.train_cmd import register as register_train

app = typer.Typer(
    rich_markup_mode=None,  # help texts are plain text: "[default: 525]" is not Rich markup
    name="pewm",
    help=(
        "pewm: Persistent Embodied World Models (arXiv 2505.05495).\n\n"
        "An action-conditioned RGB-D video world model with a persistent 3D map. "
        "`pewm demo` shows the shipped model imagining a walk in an unseen house with and without "
        "its memory; `pewm eval` runs the Table-1 benchmark; `pewm plan` plans toward goal images with it; `pewm play` lets you walk through an imagined house in the browser. "
        "To train your own: start with `pewm data generate --out houses` to build a dataset from the procedural "
        "MuJoCo houses, then `pewm data view houses --episode 0 --out ep0.mp4` to look at it, "
        "`pewm map houses --episode 0 --out map0` to fuse it into the persistent 3D map, and "
        "`pewm train --data houses --out runs/stage1` to train the world model.\n\n"
        "Errors are one line, `error: ...`, with exit status 2 for bad input; `pewm --debug COMMAND ...` "
        f"(or {DEBUG_ENV}=1) shows the Python traceback. Commands never overwrite an earlier run's output "
        "unless given --overwrite."
    ),
    cls=PewmGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")


@app.callback()
def _options(
    debug: bool = typer.Option(
        False, "--debug", help=f"show the Python traceback of an error (same as the environment variable {DEBUG_ENV}=1)"
    ),
) -> None:
    """(``debug`` is read by :func:`pewm.cli.common.debug_enabled`.)"""

for _register in (register_map, register_train, register_demo, register_eval, register_plan, register_play):
    _register(app)


@app.command()
def version() -> None:
    """Print the pewm version."""
    import pewm

    typer.echo(pewm.__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
