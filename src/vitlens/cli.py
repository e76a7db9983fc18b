"""The `vitlens` command: thin wrappers that parse options, call the library and print.

Every `VitlensError` is printed as one line and exits with status 2, without a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
import typer.core
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

    _at_least(1, image_size=image_size, num_classes=num_classes)
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


@app.command("train")
def train_command(
    model: str = typer.Argument(..., help="A registered model name (see `vitlens models`)."),
    dataset: str = typer.Option(
        None,
        help="fashion-mnist-mini (default), fashion-mnist, mnist, "
        "cifar10, cifar100 or imagefolder:PATH.",
    ),
    preset: str = typer.Option(
        "quick", help="quick (minutes on a CPU) or paper (the paper's recipe)."
    ),
    config: Path = typer.Option(None, "--config", help="YAML file of config overrides."),
    out: Path = typer.Option(None, help="Run folder (default runs/MODEL-DATASET-TIME)."),
    resume: bool = typer.Option(False, help="Continue the run in --out from its last checkpoint."),
    epochs: int = typer.Option(None, help="Total epochs, warm-up included."),
    batch_size: int = typer.Option(None, help="Global batch size (split across torchrun ranks)."),
    lr: float = typer.Option(None, help="Peak learning rate."),
    fraction: float = typer.Option(None, help="Class-balanced share of the training set."),
    augment: str = typer.Option(None, help="none, basic or paper."),
    image_size: int = typer.Option(None, help="Resize inputs to this side."),
    init: str = typer.Option(None, help="Start from this checkpoint or run (fine-tuning)."),
    freeze: str = typer.Option(None, help="none, or backbone to train only the head."),
    snapshot_every: int = typer.Option(None, help="Keep weight snapshots every N epochs."),
    checkpoint_every: int = typer.Option(None, help="Also checkpoint every N steps."),
    seed: int = typer.Option(None, help="Seed for every random choice of the run."),
    device: str = typer.Option(None, help="auto, cpu, cuda or mps."),
    precision: str = typer.Option(
        None, help="auto (bf16 where native and faster for the model), fp32 or bf16."
    ),
    data_dir: str = typer.Option(None, help="Where datasets are found or downloaded."),
    download: bool = typer.Option(None, help="Download missing datasets."),
    workers: int = typer.Option(None, help="Data-loading worker processes."),
    model_arg: list[str] = typer.Option(
        None,
        "--model-arg",
        help="Constructor override KEY=VALUE "
        "(YAML value), repeatable, e.g. --model-arg patch_size=4.",
    ),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """Train MODEL with the paper's recipe (or a quick one) and keep a resumable run folder."""
    options = dict(locals())  # the options, by name; the config fields among them pass on
    from vitlens.config import config_field_names, parse_model_args
    from vitlens.train.launch import train

    fields = {k: v for k, v in options.items() if k in config_field_names() and k != "model"}
    fields["model_args"] = parse_model_args(model_arg) if model_arg else None
    cfg, result, out = train(
        model, out=out, resume=resume, quiet=quiet, preset=preset, config_file=config, **fields
    )
    if result:
        console.print(
            f"[bold]{cfg.model}[/] on {cfg.dataset}: test acc {result['test_acc']:.4f}, "
            f"NLL {result['test_nll']:.4f}, ECE {result['test_ece']:.4f} -> {out}"
        )


@app.command("eval")
def eval_command(
    checkpoint: Path = typer.Argument(..., help="A run folder or a checkpoint .json."),
    dataset: str = typer.Option(None, help="Dataset (default: the one it was trained on)."),
    split: str = typer.Option("test", help="train or test."),
    data_dir: str = typer.Option(None, help="Where datasets are found."),
    batch_size: int = typer.Option(256, help="Evaluation batch size."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or mps."),
    json_out: Path = typer.Option(None, "--json", help="Also write the metrics to this JSON file."),
) -> None:
    """Accuracy, NLL, ECE and confident accuracy of a trained model on a dataset split."""
    from vitlens.atomic import write_json
    from vitlens.train.evaluation import evaluate_checkpoint

    metrics = evaluate_checkpoint(
        checkpoint,
        dataset=dataset,
        split=split,
        data_dir=data_dir,
        batch_size=batch_size,
        device=device,
    )
    table = Table(title=f"{checkpoint} on {metrics['dataset']} ({split})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    if json_out is not None:
        write_json(json_out, metrics)


class _AnalysesHelp(typer.core.TyperCommand):
    """A command whose help ends with the registered analyses, read when the help is shown
    (so analyses registered after import are listed too)."""

    @property
    def help(self) -> str:
        from vitlens.analysis.registry import analyses

        lines = [self._own_help, "Analyses:"]
        for spec in analyses():
            options = ", ".join(f"{o.name}={o.default!r}" for o in spec.options)
            lines.append(
                f"{spec.name}: {spec.summary}" + (f" [options: {options}]" if options else "")
            )
        return "\n\n".join(lines)

    @help.setter
    def help(self, value: str | None) -> None:
        self._own_help = value or ""


@app.command("analyze", cls=_AnalysesHelp)
def analyze_command(
    analysis: str = typer.Argument(..., help="A registered analysis (listed below)."),
    checkpoint: Path = typer.Argument(..., help="A run folder or a checkpoint .json."),
    batches: int = typer.Option(
        None,
        help="Batches to stream (default: the analysis's own; the "
        "whole test split for feature and robustness analyses).",
    ),
    batch_size: int = typer.Option(None, help="Images per batch."),
    out: Path = typer.Option(
        None, help="Folder for the Result JSON and figures (default: RUN/analysis)."
    ),
    dataset: str = typer.Option(None, help="Evaluate on another dataset than the training one."),
    other: Path = typer.Option(
        None, help="CKA: a second run to compare against; landscape: interpolate towards it."
    ),
    data_dir: str = typer.Option(None, help="Where datasets are found."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or mps."),
    seed: int = typer.Option(0, help="Seed of every random choice of the analysis."),
    quiet: bool = typer.Option(False, help="No progress bars."),
    set_: list[str] = typer.Option(
        None,
        "--set",
        help="An option of the analysis (listed below), KEY=VALUE, repeatable: JSON values, "
        "comma lists, e.g. eps=0.1,0.3,0.7, density=false, directions=hessian, pca=false.",
    ),
) -> None:
    """Run one analysis of the paper on a trained model; save its Result (JSON) and figures."""
    from vitlens.analysis.registry import get_analysis
    from vitlens.analysis.runner import parse_options
    from vitlens.analyzing import analyze

    spec = get_analysis(analysis)
    options = parse_options(spec, set_ or [])
    _at_least(1, batches=batches, batch_size=batch_size)
    _at_least(0, seed=seed)
    done = analyze(
        analysis,
        checkpoint,
        out=out,
        batches=batches,
        batch_size=batch_size,
        dataset=dataset,
        data_dir=data_dir,
        device=device,
        seed=seed,
        progress=not quiet,
        options=options,
        other=other,
    )
    if done.path is None:
        return
    path, figures = done.path, done.figures
    console.print(f"{analysis}: {path}" + "".join(f"\n  figure: {f}" for f in figures))


# The study's longer option declarations, kept apart so the command reads as one list.
_STUDY_PRESET = typer.Option(
    "quick",
    help="quick (2 CPU cores, <= 10 min), standard, paper (the paper's CIFAR-100 models "
    "and recipe, for GPUs), or imagenet (the pretrained timm resnet50 and vit_tiny on "
    "ImageNet validation images under --data-dir; nothing trained).",
)
_STUDY_MODELS = typer.Option(
    None,
    help="Comma-separated models (default: the preset's); for --preset imagenet, "
    "pretrained sources such as timm:deit_tiny_patch16_224.fb_in1k,torchvision:resnet50.",
)
_STUDY_RUNS = typer.Option(
    None,
    help="Comma-separated existing run folders (trained or imported) to analyse instead of "
    "training models; claims that need training runs say 'not measured'.",
)
_STUDY_ABLATIONS = typer.Option(
    None,
    "--ablations/--no-ablations",
    help="Train the ViT variants that claims C3, C6, C7, C15 and C16 need (default: the preset's).",
)
_STUDY_WORKERS = typer.Option(
    None,
    help="Processes running independent steps side by side on a CPU (default: "
    "min(cores, 4); 1: one after another).",
)
_SEEDS = "Repeat every training run over this many seeds (verdicts know the spread)."
_PRECISION = "auto (bf16 where native and faster for the model), fp32 or bf16."


@app.command("study")
def study_command(
    preset: str = _STUDY_PRESET,
    out: Path = typer.Option(None, help="Study folder (default studies/PRESET-TIME)."),
    resume: Path = typer.Option(None, help="Continue the study in this folder."),
    models: str = _STUDY_MODELS,
    images: int = typer.Option(None, help="--preset imagenet: balanced validation images (256)."),
    runs: str = _STUDY_RUNS,
    dataset: str = typer.Option(None, help="Dataset (default: the preset's)."),
    fraction: float = typer.Option(None, help="Class-balanced share of the training set."),
    epochs: int = typer.Option(None, help="Training epochs per model."),
    only: str = typer.Option(None, help="Run only these analyses (comma-separated)."),
    seed: int = typer.Option(None, help="Seed of the whole study."),
    seeds: int = typer.Option(None, help=_SEEDS),
    ablations: bool = _STUDY_ABLATIONS,
    device: str = typer.Option(None, help="auto, cpu, cuda or mps."),
    precision: str = typer.Option(None, help=_PRECISION),
    data_dir: str = typer.Option(None, help="Where datasets are found."),
    quiet: bool = typer.Option(False, help="No progress bars."),
    workers: int = _STUDY_WORKERS,
) -> None:
    """The paper as one command: train the models, run every analysis, write report.html."""
    from vitlens import distributed as dist
    from vitlens.study import start_study

    _at_least(0, seed=seed)
    study = start_study(
        preset=preset,
        out=out,
        resume=resume,
        quiet=quiet,
        ablations=ablations,
        runs=runs.split(",") if runs else None,
        images=images,
        models=models.split(",") if models else None,
        dataset=dataset,
        fraction=fraction,
        epochs=epochs,
        analyses=only.split(",") if only else None,
        seed=seed,
        seeds=seeds,
        device=device,
        precision=precision,
        data_dir=data_dir,
    )
    report = study.run(workers=workers)
    if dist.is_main():
        console.print(f"report: {report}")


@app.command("report")
def report_command(
    study: Path = typer.Argument(..., help="A study folder."),
) -> None:
    """Redraw a study's figures and report.html from its saved Results."""
    from vitlens.report.html import write_report

    console.print(f"report: {write_report(study)}")


@app.command("explain")
def explain_command(
    run: Path = typer.Argument(..., help="A run folder (trained or imported) or checkpoint .json."),
    out: Path = typer.Option(..., help="Folder for explain.html, the Results and the charts."),
    image: list[Path] = typer.Option(
        None, help="An image file to explain (repeatable; default: test images of the run)."
    ),
    class_: int = typer.Option(
        None, "--class", help="The class the gradient rollout explains (default: predicted)."
    ),
    images_from_test: int = typer.Option(4, help="Without --image: this many test images."),
    data_dir: str = typer.Option(None, help="Where the run's dataset is found."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or mps."),
) -> None:
    """Show how a ViT sees images: attention maps, rollout, embeddings, tokens (one HTML page)."""
    from vitlens.explaining import explain

    done = explain(
        run,
        out=out,
        images=image or [],
        class_index=class_,
        n_images=images_from_test,
        data_dir=data_dir,
        device=device,
    )
    for note in done.notes:
        console.print(f"note: {note}", highlight=False)
    console.print(f"explain: {done.page}")


@app.command("buildup")
def buildup_command(
    out: Path = typer.Option(..., help="Folder for the candidates' runs and the Result."),
    base: str = typer.Option("alternet_nano", help="An AlterNet configuration to search over."),
    dataset: str = typer.Option("fashion-mnist-mini", help="Dataset."),
    epochs: int = typer.Option(3, help="Training epochs per candidate."),
    fraction: float = typer.Option(0.5, help="Class-balanced share of the training set."),
    val_fraction: float = typer.Option(
        0.1, help="Class-balanced share of the training set held out to decide on."
    ),
    max_candidates: int = typer.Option(6, help="Stop after training this many candidates."),
    seed: int = typer.Option(0, help="Seed of every candidate's training."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or mps."),
    precision: str = typer.Option(
        "auto", help="auto (bf16 where native and faster for the model), fp32 or bf16."
    ),
    data_dir: str = typer.Option(None, help="Where datasets are found."),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """The AlterNet build-up rule as a search: add MSA blocks at stage ends while they help."""
    from vitlens.buildup import buildup
    from vitlens.train.precision import PRECISIONS

    if precision not in PRECISIONS:  # before the search takes its folder
        raise VitlensError(f"precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    _at_least(1, epochs=epochs, max_candidates=max_candidates)
    _at_least(0, seed=seed)
    result = buildup(
        out,
        base=base,
        dataset=dataset,
        epochs=epochs,
        fraction=fraction,
        val_fraction=val_fraction,
        max_candidates=max_candidates,
        seed=seed,
        device=device,
        precision=precision,
        data_dir=data_dir,
        quiet=quiet,
    )
    console.print(
        f"chosen MSA layout {result.best_msa} (decided on {result.decided_on}): val acc "
        f"{result.best_accuracy:.4f}, test acc {result.best_test_accuracy:.4f} -> {out}"
    )


def _at_least(minimum: int, **options: int | None) -> None:
    """Refuse numeric options below `minimum` (None: not given), naming the option."""
    for name, value in options.items():
        if value is not None and value < minimum:
            option = "--" + name.replace("_", "-")
            raise VitlensError(f"{option} must be at least {minimum}, got {value}")


def _meta():
    import torch

    return torch.device("meta")


def main() -> None:
    """Entry point of the console script."""
    try:
        app(standalone_mode=False)
    except VitlensError as err:
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {err}", highlight=False)
        sys.exit(err.exit_code)
    except (typer.Exit, SystemExit) as done:
        sys.exit(getattr(done, "exit_code", getattr(done, "code", 0)))
    except Exception as err:
        # Usage errors of typer's click (bad option, unknown command) know how to show themselves.
        if hasattr(err, "show") and isinstance(getattr(err, "exit_code", None), int):
            err.show()
            sys.exit(err.exit_code)
        raise


@app.command("import")
def import_command(
    source: str = typer.Argument(
        ...,
        help="timm:NAME[.TAG], torchvision:NAME, hf:ORG/NAME[@REVISION] (hub cache), hf:DIR "
        "(save_pretrained folder) or authors:NAME.",
    ),
    out: Path = typer.Option(..., help="The run folder to write (must not exist yet)."),
    weights: str = typer.Option(
        None,
        help=".safetensors, .pth/.pth.tar (weights_only) or a Google .npz (timm ViTs); for "
        "torchvision also a weights enum: DEFAULT, IMAGENET1K_V1, ResNet50_Weights.IMAGENET1K_V2 "
        "(from the torch.hub cache, TORCH_HOME).",
    ),
    pretrained: bool = typer.Option(
        False,
        "--pretrained",
        help="timm: the tag's own weights, from the Hugging Face cache (HF_HUB_CACHE/HF_HOME; "
        "no download with HF_HUB_OFFLINE=1).",
    ),
    num_classes: int = typer.Option(None, help="Classifier size (default: the dataset's)."),
    in_chans: int = typer.Option(None, help="Input channels (default: the dataset's)."),
    image_size: int = typer.Option(None, help="Input side (default: what the model is made for)."),
    dataset: str = typer.Option(None, help="The data it is evaluated and analysed on."),
    data_dir: str = typer.Option(None, help="Where datasets are found."),
) -> None:
    """Turn a model trained elsewhere into a run folder (for eval, analyze, study, train --init)."""
    from vitlens.importing import import_model

    report = import_model(
        source,
        out,
        weights=weights,
        num_classes=num_classes,
        in_chans=in_chans,
        image_size=image_size,
        dataset=dataset,
        data_dir=data_dir,
        pretrained=pretrained,
    )
    console.print(
        f"[bold]{report.model}[/] ({report.parameters:,} parameters, {report.blocks}) "
        f"for {report.dataset} -> {report.out}"
    )
    if not report.pretrained:
        console.print("note: no weights were given, so the model is at random init")


@app.command("export")
def export_command(
    path: Path = typer.Argument(..., help="A Result JSON, a run folder or a study folder."),
    csv: Path = typer.Option(..., "--csv", help="Folder for the CSV files (one per Result)."),
) -> None:
    """Results as tidy long-format CSV tables (model, block, kind, stage, depth, metric, value)."""
    from vitlens.export import export_csv

    for written in export_csv(path, csv):
        console.print(f"{written}")


if __name__ == "__main__":
    main()
