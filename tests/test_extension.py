"""Growing vitlens without editing it: an analysis and an adapter defined entirely in this file.

The analysis is registered with `register_analysis` and must then be listed by `vitlens analyze
--help`, run by `vitlens analyze`, scheduled by a study and drawn in its report. The adapter
describes a model whose forward returns a dict and whose attention layer vitlens has never seen;
Fourier, lesion, attention statistics and the Hessian must run on it through its Anatomy alone.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from vitlens.analysis import registry
from vitlens.analysis.attention import attention_stats
from vitlens.analysis.fourier import fourier
from vitlens.analysis.hessian import hessian_spectrum
from vitlens.analysis.lesion import lesion
from vitlens.analysis.result import Result, load_result
from vitlens.analysis.spec import AnalysisSpec, Budget, Figure, Inputs, Option
from vitlens.anatomy import (
    VECTOR,
    Anatomy,
    Block,
    anatomy_of,
    describe,
    lesioned,
    record,
    register_adapter,
    switch_flag,
    tokens,
)
from vitlens.anatomy import core as anatomy_core

# -- a throwaway analysis: the mean of the logits' softmax maximum ("confidence") -------------


@dataclass(frozen=True)
class ConfidenceResult(Result):
    analysis: ClassVar[str] = "confidence"
    mean_confidence: float = 0.0
    temperature: float = 1.0
    n_images: int = 0


def _confidence(inputs: Inputs) -> ConfidenceResult:
    anatomy = anatomy_of(inputs.model)
    total, n = 0.0, 0
    inputs.model.eval()
    with torch.no_grad():
        for images, _ in inputs.batches:
            logits = anatomy.forward(inputs.model, images) / inputs.options["temperature"]
            total += logits.softmax(dim=1).max(dim=1).values.sum().item()
            n += images.shape[0]
    return ConfidenceResult(
        provenance=inputs.provenance,
        mean_confidence=total / n,
        temperature=inputs.options["temperature"],
        n_images=n,
    )


def _draw_confidence(results: list[ConfidenceResult], path) -> object:
    from matplotlib.figure import Figure as MplFigure

    from vitlens.report.png import save_png

    figure = MplFigure(figsize=(4, 3))
    ax = figure.subplots()
    ax.bar([r.provenance.model for r in results], [r.mean_confidence for r in results])
    return save_png(figure, path)


CONFIDENCE = AnalysisSpec(
    name="confidence",
    summary="mean softmax confidence on clean test images (a test-only analysis)",
    run=_confidence,
    data="test",
    section="features",
    order=1000,
    budgets={"analyze": Budget(2, 32), "quick": Budget(1, 16)},
    options=(Option("temperature", 1.0, "divide the logits by this"),),
    figures=(Figure("confidence", _draw_confidence, "Mean softmax confidence per model."),),
)


@pytest.fixture
def confidence_registered():
    registry.register_analysis(CONFIDENCE)
    yield CONFIDENCE
    registry._SPECS.pop("confidence", None)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from vitlens.config import make_config
    from vitlens.train import Trainer

    out = tmp_path_factory.mktemp("run") / "vit"
    cfg = make_config("quick", model="vit_nano", epochs=1, fraction=0.01, snapshot_every=1)
    Trainer(cfg, out, quiet=True).run()
    return out


def test_a_registered_analysis_is_listed_run_scheduled_and_reported(
    confidence_registered, tiny_run, tmp_path
):
    from vitlens.cli import app
    from vitlens.study import Study, StudyPlan
    from vitlens.train.runs import load_model

    cli = CliRunner()
    shown = cli.invoke(app, ["analyze", "--help"])
    assert shown.exit_code == 0 and "confidence" in shown.output
    assert "mean softmax confidence" in shown.output

    done = cli.invoke(
        app,
        ["analyze", "confidence", str(tiny_run), "--out", str(tmp_path / "a"), "--quiet"]
        + ["--set", "temperature=2.0"],
    )
    assert done.exit_code == 0, done.output
    saved = load_result(tmp_path / "a" / "confidence.json")
    assert saved.temperature == 2.0 and saved.n_images == 64  # the analyze budget: 2 x 32
    assert (tmp_path / "a" / "confidence.png").stat().st_size > 1000
    # The same number computed here by hand, on the same two batches of the test split.
    model, _ = load_model(tiny_run, torch.device("cpu"))
    from vitlens.analysis.runner import clean_batches, load_subject

    batches, _ = clean_batches(load_subject(tiny_run, torch.device("cpu")), batch_size=32, limit=2)
    probs = torch.cat([(model.eval()(x) / 2.0).softmax(1).max(1).values for x, _ in batches])
    assert saved.mean_confidence == pytest.approx(probs.mean().item(), rel=1e-6)

    bad = cli.invoke(app, ["analyze", "confidence", str(tiny_run), "--set", "nope=1"])
    assert bad.exit_code != 0

    plan = StudyPlan.from_preset("quick", models=["vit_nano"], epochs=1, fraction=0.01)
    assert "confidence" in plan.analyses and plan.budget["confidence"] == [1, 16]
    plan = plan.with_overrides(analyses=["confidence"])
    study = tmp_path / "study"
    Study.create(study, plan, quiet=True).run()
    result = load_result(study / "results" / "confidence" / "vit_nano.json")
    assert result.n_images == 16
    page = (study / "report.html").read_text()
    assert "Mean softmax confidence per model." in page
    assert (study / "figures" / "confidence.png").exists()


# -- a throwaway adapter: dict outputs and an attention layer vitlens does not know -----------


class GatedAttention(nn.Module):
    """Attention whose explicit path is chosen by its own flag, `softmax_path`; the fused path
    (SDPA) has no double backward, so only the adapter's switch makes the Hessian work."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.qkv, self.out = heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.softmax_path = False
        self.probs = nn.Identity()  # the explicit path routes (B, heads, N, N) through here

    def forward(self, x):
        B, N, C = x.shape
        # (B, N, 3C) -> 3 x (B, heads, N, C / heads)
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        if self.softmax_path:
            attn = self.probs((q @ k.transpose(-2, -1) / math.sqrt(C // self.heads)).softmax(-1))
            y = attn @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(B, N, C))


class Layer(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm1, self.mix, self.norm2 = (
            nn.LayerNorm(dim),
            GatedAttention(dim, 2),
            nn.LayerNorm(dim),
        )
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.mix(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class DictNet(nn.Module):
    """A tiny ViT-like model whose forward returns {"scores": logits, "tokens": ...}."""

    def __init__(self, dim: int = 16, classes: int = 4):
        super().__init__()
        self.patchify = nn.Conv2d(1, dim, kernel_size=4, stride=4)  # 16x16 -> 4x4 tokens
        self.embedded = nn.Identity()
        self.layers = nn.ModuleList([Layer(dim), Layer(dim)])
        self.classifier = nn.Linear(dim, classes)

    def forward(self, x):
        t = self.embedded(self.patchify(x).flatten(2).transpose(1, 2))  # (B, 16, dim)
        for layer in self.layers:
            t = layer(t)
        return {"scores": self.classifier(t.mean(1)), "tokens": t}


def describe_dictnet(model: DictNet) -> Anatomy:
    grid = tokens(0, (4, 4))
    blocks = [Block("embed", "embed", 0, model.embedded, "output", None, grid)]
    for i, layer in enumerate(model.layers):
        blocks += [
            Block(
                f"layer{i}.msa", "msa", 0, layer.norm2, "input", layer.mix, grid, layer.mix.probs
            ),
            Block(f"layer{i}.mlp", "mlp", 0, layer, "output", layer.ffn, grid),
        ]
    blocks.append(Block("head", "head", 0, model.classifier, "output", None, VECTOR))
    return Anatomy(
        tuple(blocks),
        logits=lambda out: out["scores"],
        explicit=switch_flag("softmax_path", True),
    )


@pytest.fixture
def dictnet():
    register_adapter(lambda m: isinstance(m, DictNet), describe_dictnet)
    yield DictNet().eval()
    anatomy_core._ADAPTERS[:] = [a for a in anatomy_core._ADAPTERS if a[1] is not describe_dictnet]


def _batches(n: int = 2, size: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 1, 16, 16, generator=g), torch.randint(0, 4, (size,), generator=g))
            for _ in range(n)]  # fmt: skip


def test_a_registered_adapter_serves_every_analysis(dictnet):
    names = [b.name for b in describe(dictnet)]
    assert names == ["embed", "layer0.msa", "layer0.mlp", "layer1.msa", "layer1.mlp", "head"]
    x = _batches(1)[0][0]
    maps, logits = record(dictnet, x)
    assert torch.equal(logits, dictnet(x)["scores"])
    assert maps["layer1.mlp"].shape == (8, 16, 4, 4)

    with lesioned(dictnet, ["layer0.msa", "layer0.mlp", "layer1.msa", "layer1.mlp"]):
        stripped, _ = record(dictnet, x)
    assert torch.allclose(stripped["layer1.mlp"], stripped["embed"])

    f = fourier(dictnet, _batches())
    assert f.names == names[:-1] and len(f.high_frequency) == 5
    les = lesion(dictnet, _batches())
    assert les.names == names[1:-1] and les.n_images == 16
    att = attention_stats(dictnet, _batches())
    assert att.names == ["layer0.msa", "layer1.msa"]
    assert all(len(heads) == 2 for heads in att.entropy)  # two heads per layer
    # The fused path has no double backward: the Hessian needs the adapter's switch.
    assert dictnet.layers[0].mix.softmax_path is False
    h = hessian_spectrum(dictnet, _batches(1), weight_decay=0.0, k=2, batch_size=8, n_batches=1)
    assert len(h.eigenvalues) == 1 and len(h.eigenvalues[0]) == 2
    assert all(math.isfinite(v) for v in h.eigenvalues[0])
    assert dictnet.layers[0].mix.softmax_path is False  # restored


def test_explicit_path_of_the_adapter_matches_the_fused_one(dictnet):
    x = _batches(1)[0][0]
    fused = dictnet(x)["scores"]
    with anatomy_of(dictnet).explicit(dictnet):
        explicit = dictnet(x)["scores"]
    assert torch.allclose(fused, explicit, atol=1e-5)


def test_result_of_an_unregistered_kind_is_a_clear_error(tmp_path):
    from vitlens.errors import VitlensError

    path = tmp_path / "r.json"
    path.write_text(json.dumps({"analysis": "nonesuch", "schema": 1}))
    with pytest.raises(VitlensError, match="unknown result kind"):
        load_result(path)


def test_every_declared_option_default_is_the_functions_own():
    import inspect

    for spec in registry.analyses():
        if spec.function is None:
            continue
        params = inspect.signature(spec.function).parameters
        for option in spec.options:
            assert option.name in params, (spec.name, option.name)
            default = params[option.name].default
            if default is not inspect.Parameter.empty:
                assert option.default == default, (spec.name, option.name)


def test_hessian_of_a_model_with_an_unused_parameter(dictnet):
    # DINOv2 keeps a mask token its forward never touches: it has no gradient and no curvature.
    dictnet.unused = nn.Parameter(torch.ones(3))
    h = hessian_spectrum(dictnet, _batches(1), weight_decay=0.0, k=2, batch_size=8, n_batches=1)
    assert all(math.isfinite(v) for v in h.eigenvalues[0])
