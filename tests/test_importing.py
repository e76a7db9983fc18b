"""`vitlens import`: outside models become run folders that eval, analyze and train --init accept.

Every model is a small random-init timm, torchvision, Hugging Face or authors' model written to a
temporary folder (no download). A run must rebuild to a model with the same outputs as the one
imported; every kind of bad input must be a VitlensError (exit status 2 on the command line) that
leaves --out unwritten.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from vitlens.errors import VitlensError
from vitlens.importing import import_model
from vitlens.models import create_model
from vitlens.train.runs import init_from_checkpoint, load_model

timm = pytest.importorskip("timm")

X = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))


def logits(model: nn.Module, x: torch.Tensor = X) -> torch.Tensor:
    from vitlens.anatomy import anatomy_of

    model.eval()
    with torch.no_grad():
        return anatomy_of(model, need_blocks=False).forward(model, x)


def perturbed(model: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen), alpha=0.05)
    return model.eval()


def test_timm_weights_round_trip_through_a_run_folder(tmp_path):
    theirs = perturbed(timm.create_model("test_vit", num_classes=10, in_chans=1, img_size=32))
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in theirs.state_dict().items()}, str(weights))
    report = import_model(
        "timm:test_vit", tmp_path / "run", weights=weights, image_size=32
    )  # fashion-mnist-mini: 1 channel, 10 classes
    assert "msa" in report.blocks and report.dataset == "fashion-mnist-mini"
    model, record = load_model(tmp_path / "run")
    torch.testing.assert_close(logits(model), logits(theirs), rtol=0, atol=0)
    origin = record["import"]
    assert origin["source"] == "timm:test_vit" and origin["weights"] == "w.safetensors"
    assert origin["random_init"] is False and report.pretrained
    from vitlens.atomic import file_digest as sha256_of

    assert origin["weights_sha256"] == sha256_of(weights)
    assert origin["normalisation"]["dataset"]["mean"] == [pytest.approx(0.2860, abs=1e-3)]
    # train --init: a fresh model of the same name starts from the imported weights.
    fresh = create_model("timm:test_vit", num_classes=10, image_size=32, in_chans=1)
    report = init_from_checkpoint(fresh, tmp_path / "run")
    assert not report["new"] and not report["interpolated"]
    torch.testing.assert_close(logits(fresh), logits(theirs), rtol=0, atol=0)


def test_eval_and_analyze_accept_an_imported_run(tmp_path):
    from vitlens.analysis.runner import run_analysis
    from vitlens.train.evaluation import evaluate_checkpoint

    report = import_model("timm:test_resnet", tmp_path / "run", image_size=32)
    assert not report.pretrained and load_model(tmp_path / "run")[1]["import"]["random_init"]
    metrics = evaluate_checkpoint(tmp_path / "run", batch_size=500)
    assert metrics["model"] == "timm:test_resnet" and metrics["samples"] == 2000
    result = run_analysis("fourier", tmp_path / "run", batches=1, batch_size=8, progress=False)
    assert result.names[0] == "embed" and len(result.names) > 3
    assert result.provenance.model == "timm:test_resnet"


def test_a_pth_is_read_with_weights_only_and_a_pickle_it_refuses_is_an_error(tmp_path):
    theirs = perturbed(timm.create_model("test_resnet", num_classes=10, in_chans=1))
    good = tmp_path / "good.pth.tar"
    torch.save({"state_dict": theirs.state_dict(), "epoch": 3}, good)
    import_model("timm:test_resnet", tmp_path / "run", weights=good, image_size=32)
    torch.testing.assert_close(logits(load_model(tmp_path / "run")[0]), logits(theirs))
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": theirs.state_dict(), "hook": Unpicklable()}, evil)
    with pytest.raises(VitlensError, match="weights_only=True\\) refuses"):
        import_model("timm:test_resnet", tmp_path / "out", weights=evil, image_size=32)
    assert not (tmp_path / "out").exists()


class Unpicklable:
    """A class the restricted unpickler does not allow."""


def test_weights_that_do_not_fit_are_listed_and_nothing_is_written(tmp_path):
    other = timm.create_model("test_vit", num_classes=10, in_chans=1, img_size=32)
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(weights))
    with pytest.raises(VitlensError) as err:
        import_model("timm:test_resnet", tmp_path / "out", weights=weights, image_size=32)
    message = str(err.value)
    assert "missing keys" in message and "unexpected keys" in message
    assert message.count("more)") == 2  # both lists cut at ten
    assert "conv1.0.weight" in message and "blocks.0.attn.qkv.weight" in message
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out*"))  # no temporary folder left either


@pytest.mark.parametrize(
    ("source", "kwargs", "match"),
    [
        ("timmm:test_vit", {}, "Did you mean timm:"),
        ("resnet18", {}, "SOURCE is timm:NAME"),
        ("timm:test_vitt", {}, "Close matches: test_vit"),
        ("authors:vit_tiny", {}, "Close matches: vit_ti"),
        ("torchvision:resnet1", {"dataset": "cifar10"}, "Close matches: resnet18"),
        # Patch 2 does not tile 33 px.
        ("authors:vit_ti", {"image_size": 33}, "cannot"),
        # 100 classes for a 10-class dataset.
        ("authors:vit_ti", {"num_classes": 100}, "has 1 channels and 10 classes"),
        # torchvision models are RGB, the default dataset is grayscale.
        ("torchvision:resnet18", {}, "takes 3-channel images"),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, source, kwargs, match):
    with pytest.raises(VitlensError, match=match):
        import_model(source, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_an_existing_folder_is_not_overwritten(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(VitlensError, match="not empty"):
        import_model("authors:vit_ti", tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_the_authors_vit_release_imports_with_its_outputs(tmp_path):
    ours = perturbed(create_model("vit_ti", num_classes=10, in_chans=1))
    # timm 0.5.4 names the patch embedding's conv `patch_embed.proj` (test_convert_authors.py).
    state = {
        k.replace("patch_embed.", "patch_embed.proj."): v for k, v in ours.state_dict().items()
    }
    release = tmp_path / "vit_ti_cifar100.pth.tar"
    torch.save({"name": "vit_ti", "state_dict": state}, release)
    import_model("authors:vit_ti", tmp_path / "run", weights=release)
    model, record = load_model(tmp_path / "run")
    assert record["model_spec"]["name"] == "vit_ti"  # a native vitlens run
    torch.testing.assert_close(logits(model), logits(ours), rtol=0, atol=0)


def test_a_hugging_face_folder_imports_as_its_classification_model(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        num_channels=1,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=10,
    )
    theirs = perturbed(transformers.ViTForImageClassification(config))
    theirs.save_pretrained(tmp_path / "hf")
    report = import_model(f"hf:{tmp_path / 'hf'}", tmp_path / "run")
    assert "4 msa" not in report.blocks and "2 msa" in report.blocks
    model, record = load_model(tmp_path / "run")
    torch.testing.assert_close(logits(model), theirs(X).logits, rtol=0, atol=1e-6)
    assert record["import"]["weights"] == "model.safetensors"
    from vitlens.train.evaluation import evaluate_checkpoint

    metrics = evaluate_checkpoint(tmp_path / "run", batch_size=1000)  # logits from the output
    assert metrics["samples"] == 2000 and 0 <= metrics["acc"] <= 1
    with pytest.raises(VitlensError, match="has no config.json"):
        import_model(f"hf:{tmp_path}", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_command_exits_2_on_bad_input_and_0_on_success(tmp_path):
    from typer.testing import CliRunner

    from vitlens.cli import app

    bad = subprocess.run(
        [sys.executable, "-m", "vitlens.cli", "import", "tim:vit_ti", "--out", "out"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "Did you mean timm:" in bad.stderr and not (tmp_path / "out").exists()
    run = tmp_path / "run"
    good = CliRunner().invoke(
        app, ["import", "authors:vit_ti", "--out", str(run), "--image-size", "16"]
    )
    assert good.exit_code == 0, good.output
    assert (run / "checkpoints" / "final.json").exists()


def test_damaged_hugging_face_folders_and_unwritable_out_are_clear_errors(tmp_path):
    transformers = pytest.importorskip("transformers")
    (tmp_path / "not-json").mkdir()
    (tmp_path / "not-json" / "config.json").write_text("{not json")
    (tmp_path / "no-type").mkdir()
    (tmp_path / "no-type" / "config.json").write_text('{"hidden_size": 8}')
    config = transformers.ViTConfig(
        image_size=28, patch_size=7, num_channels=1, hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=64, num_labels=10,
    )  # fmt: skip
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path / "garbage")
    (tmp_path / "garbage" / "model.safetensors").write_bytes(b"garbage" * 10)
    cases = [("not-json", "not a Hugging Face model config"), ("no-type", "model_type"),
             ("garbage", "transformers cannot load")]  # fmt: skip
    for folder, message in cases:
        out = tmp_path / f"run-{folder}"
        with pytest.raises(VitlensError, match=message):
            import_model(f"hf:{tmp_path / folder}", out)
        assert not out.exists()
    with pytest.raises(VitlensError, match="cannot write the run folder"):
        import_model("timm:test_vit", "/proc/vitlens-cannot-write-here")
