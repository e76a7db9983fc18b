"""The `vitlens` command: thin wrappers that parse options, call the library and print.

Every `VitlensError` is printed as one line and exits with status 2, without a traceback.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.table import Table

from vitlens.errors import VitlensError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="How do vision transformers work? Train the paper's models and run its analyses.",
)
console = Console()


@app.callback()
def root() -> None:
    """How do vision transformers work? Train the paper's models and run its analyses."""


@app.command("models")
def models_command(
    pattern: str = typer.Option("*", "--pattern", "-p", help="Glob filter, e.g. 'vit_*'."),
    image_size: int = typer.Option(32, help="Input side used for the FLOP count."),
    num_classes: int = typer.Option(100, help="Classifier size used for the parameter count."),
) -> None:
    """List registered models with their parameters and forward GFLOPs."""
    from functools import partial

    from vitlens.models import MODELS, count_parameters, create_model, list_models
    from vitlens.models.flops import forward_flops

    names = list_models(pattern)
    if not names:
        raise VitlensError(f"no model matches {pattern!r}; registered: {', '.join(MODELS)}")
    table = Table(title=f"vitlens models at {image_size}x{image_size}, {num_classes} classes")
    table.add_column("name")
    table.add_column("family")
    table.add_column("params", justify="right")
    table.add_column("GFLOPs", justify="right")
    table.add_column("configuration")
    for name in names:
        build = partial(create_model, name, num_classes=num_classes, image_size=image_size)
        with _meta():
            params = count_parameters(build())
        flops = forward_flops(build, image_size=image_size)
        spec = MODELS[name]
        table.add_row(name, spec.family.__name__, f"{params:,}", f"{flops / 1e9:.3f}", spec.summary)
    console.print(table)
    console.print("GFLOPs: one 32x32 image, 2 FLOPs per multiply-add.", style="dim")


def _meta():
    import torch

    return torch.device("meta")


def main() -> None:
    """Entry point of the console script."""
    try:
        app(standalone_mode=False)
    except VitlensError as err:
        Console(stderr=True).print(f"[bold red]error:[/] {err}", highlight=False)
        sys.exit(err.exit_code)
    except (typer.Exit, SystemExit) as done:
        sys.exit(getattr(done, "exit_code", getattr(done, "code", 0)))
    except Exception as err:
        # Usage errors of typer's click (bad option, unknown command) know how to show themselves.
        if hasattr(err, "show") and isinstance(getattr(err, "exit_code", None), int):
            err.show()
            sys.exit(err.exit_code)
        raise


if __name__ == "__main__":
    main()
