"""Pretrained models by name, offline: hub caches laid out on disk as the libraries lay them out.

Each test builds the cache a user with network would have after one download (a Hugging Face
`models--ORG--NAME/snapshots/REV` tree with `refs/main`, timm's repository in that same cache, a
torchvision weights file in TORCH_HOME/hub/checkpoints) holding a tiny random-init model, sets
HF_HUB_OFFLINE=1 so nothing can be fetched, and imports by name. The run must carry the cached
weights, record the revision and the model's own preprocessing, and later commands must apply it.
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from vitlens.errors import VitlensError
from vitlens.importing import import_model
from vitlens.train.checkpoint import read_record
from vitlens.train.evaluation import evaluate_checkpoint
from vitlens.train.runs import load_model, load_run_data

REV = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def offline(tmp_path, monkeypatch):
    hub = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return hub


def snapshot(hub, repo: str, rev: str = REV):
    org, name = repo.split("/")
    root = hub / f"models--{org}--{name}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(rev)
    folder = root / "snapshots" / rev
    folder.mkdir(parents=True)
    return folder


def record_of(run):
    return read_record(run / "checkpoints" / "final.json")


def manual_metrics(model, run, mean, std) -> tuple[float, float]:
    """Accuracy and NLL on the run's test split, normalised by hand with `mean` and `std`."""
    data = load_run_data(record_of(run), "test")
    x = data.images.float() / 255
    x = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    from vitlens.anatomy import anatomy_of

    model.eval()
    with torch.no_grad():
        logits = anatomy_of(model, need_blocks=False).forward(model, x)
    nll = torch.nn.functional.cross_entropy(logits.double(), data.labels).item()
    return (logits.argmax(1) == data.labels).float().mean().item(), nll


# ---------------------------------------------------------------------------------- Hugging Face


def tiny_hf_vit(folder):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=28, patch_size=7, num_channels=1, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, num_labels=10,
    )  # fmt: skip
    model = transformers.ViTForImageClassification(config).eval()
    model.save_pretrained(folder)
    transformers.ViTImageProcessor(
        size={"height": 28, "width": 28}, image_mean=[0.5], image_std=[0.25], resample=3
    ).save_pretrained(folder)
    return model


def test_hf_hub_id_imports_from_the_cache_with_its_processor(offline, tmp_path):
    theirs = tiny_hf_vit(snapshot(offline, "tinyorg/tiny-vit"))
    run = tmp_path / "run"
    import_model("hf:tinyorg/tiny-vit", run, dataset="fashion-mnist-mini")
    record = record_of(run)
    assert record["model_spec"]["name"] == f"hf:tinyorg/tiny-vit@{REV}"  # pinned to the commit
    assert record["import"]["pretrained"]["revision"] == REV
    pre = record["import"]["preprocessing"]
    assert pre["mean"] == [0.5] and pre["std"] == [0.25] and pre["interpolation"] == "bicubic"

    model, _ = load_model(run)
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x).logits, theirs(x).logits)
    # eval normalises with the processor's statistics, not fashion-mnist's
    assert load_run_data(record, "test").info.mean == (0.5,)
    got = evaluate_checkpoint(run, batch_size=64)
    acc, nll = manual_metrics(model, run, [0.5], [0.25])
    assert got["acc"] == pytest.approx(acc, abs=1e-6) and got["nll"] == pytest.approx(nll, rel=1e-4)

    import shutil

    shutil.rmtree(offline)  # the run stands alone: it never reads the cache again
    load_model(run)


def test_hf_revision_and_missing_repos(offline, tmp_path):
    tiny_hf_vit(snapshot(offline, "tinyorg/tiny-vit"))
    import_model(f"hf:tinyorg/tiny-vit@{REV}", tmp_path / "pinned", dataset="fashion-mnist-mini")
    for name in ("hf:tinyorg/absent", "hf:tinyorg/tiny-vit@" + "f" * 40):
        out = tmp_path / "never"
        with pytest.raises(VitlensError) as err:
            import_model(name, out, dataset="fashion-mnist-mini")
        message = str(err.value)
        assert str(offline) in message and "HF_HUB_OFFLINE" in message and "HF_HOME" in message
        assert not out.exists()


def test_damaged_processor_config_is_a_clear_error(offline, tmp_path):
    folder = snapshot(offline, "tinyorg/tiny-vit")
    tiny_hf_vit(folder)
    (folder / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(VitlensError, match="preprocessor_config.json"):
        import_model("hf:tinyorg/tiny-vit", tmp_path / "run", dataset="fashion-mnist-mini")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------ timm


def cached_timm(hub, name: str):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    cfg = timm.models.get_pretrained_cfg(name)
    torch.manual_seed(0)
    theirs = timm.create_model(name, pretrained=False).eval()
    state = {k: v.contiguous() for k, v in theirs.state_dict().items()}
    save_file(state, str(snapshot(hub, cfg.hf_hub_id) / "model.safetensors"))
    return theirs


def test_timm_tag_pretrained_from_the_cache(offline, tmp_path):
    theirs = cached_timm(offline, "test_vit.r160_in1k")
    run = tmp_path / "run"
    import_model(
        "timm:test_vit.r160_in1k", run, pretrained=True, image_size=32, dataset="fashion-mnist-mini"
    )
    record = record_of(run)
    assert record["model_spec"]["name"] == "timm:test_vit.r160_in1k"
    assert (
        record["import"]["revision"] == REV and record["import"]["weights"] == "model.safetensors"
    )
    pre = record["import"]["preprocessing"]
    # crop_pct 0.95 at 32 px: shorter side to floor(32 / 0.95) = 33, bicubic; RGB mean/std do
    # not fit the 1-channel data, so the dataset's statistics stay
    assert (pre["resize"], pre["interpolation"], pre["mean"]) == (33, "bicubic", None)
    model, _ = load_model(run)
    mine, cached = model.state_dict(), theirs.state_dict()
    assert torch.equal(mine["blocks.0.attn.qkv.weight"], cached["blocks.0.attn.qkv.weight"])
    # timm summed the RGB filters for one channel, and gave the 10 classes a new head
    summed = cached["patch_embed.proj.weight"].sum(1, keepdim=True)
    assert torch.allclose(mine["patch_embed.proj.weight"], summed, atol=1e-6)
    assert mine["head.weight"].shape == (10, cached["head.weight"].shape[1])


def test_timm_eval_applies_the_data_config_of_the_tag(offline, tmp_path):
    cached_timm(offline, "test_vit.r160_in1k")
    run = tmp_path / "run"
    data = rgb_folder(tmp_path / "images")  # RGB: the tag's own mean and std apply
    import_model("timm:test_vit.r160_in1k", run, pretrained=True, image_size=32, dataset=data)
    pre = record_of(run)["import"]["preprocessing"]
    assert (pre["resize"], pre["mean"], pre["std"]) == (33, [0.5] * 3, [0.5] * 3)
    assert load_run_data(record_of(run), "test").images.shape[-2:] == (32, 32)  # centre crop
    model, _ = load_model(run)
    got = evaluate_checkpoint(run, batch_size=4)
    acc, nll = manual_metrics(model, run, [0.5] * 3, [0.5] * 3)
    assert got["acc"] == pytest.approx(acc, abs=1e-6) and got["nll"] == pytest.approx(nll, rel=1e-4)


def test_timm_without_cached_weights_or_tag(offline, tmp_path):
    pytest.importorskip("timm")
    out = tmp_path / "never"
    with pytest.raises(VitlensError, match="model.safetensors") as err:
        import_model("timm:test_vit.r160_in1k", out, pretrained=True, image_size=32)
    assert str(offline) in str(err.value)
    with pytest.raises(VitlensError, match="r160_in1k"):  # the tags it has are listed
        import_model("timm:test_vit.no_such_tag", out, pretrained=True, image_size=32)
    with pytest.raises(VitlensError, match="--pretrained is for timm"):
        import_model("torchvision:resnet18", out, pretrained=True)
    assert not out.exists()


# ----------------------------------------------------------------------------------- torchvision


def rgb_folder(root):
    """A 2-class image folder of RGB images of odd sizes (train and test)."""
    gen = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        for c, cls in enumerate(("ants", "bees")):
            (root / split / cls).mkdir(parents=True)
            for i in range(3):
                h, w = 40 + 7 * i, 50 + 3 * c
                pixels = torch.randint(0, 256, (h, w, 3), generator=gen, dtype=torch.uint8)
                Image.fromarray(pixels.numpy()).save(root / split / cls / f"{i}.png")
    return f"imagefolder:{root}"


def cached_torchvision(torch_home, model: str):
    torchvision = pytest.importorskip("torchvision")
    import os
    from urllib.parse import urlparse

    weights = torchvision.models.get_model_weights(model).DEFAULT
    classes = len(weights.meta["categories"])
    torch.manual_seed(0)
    theirs = torchvision.models.get_model(model, weights=None, num_classes=classes).eval()
    path = torch_home / "hub" / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    path.parent.mkdir(parents=True)
    torch.save(theirs.state_dict(), path)
    return theirs, weights, path


def test_torchvision_weights_enum_from_the_torch_hub_cache(offline, tmp_path, monkeypatch):
    theirs, weights, _ = cached_torchvision(tmp_path / "torch-home", "mobilenet_v3_small")
    import torch.hub

    def no_download(*a, **k):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    data = rgb_folder(tmp_path / "images")
    run = tmp_path / "run"
    import_model(
        "torchvision:mobilenet_v3_small", run, weights="DEFAULT", image_size=32, dataset=data
    )
    record = record_of(run)
    assert record["import"]["enum"] == str(weights) and record["import"]["new_head"] == [
        "classifier.3.weight",
        "classifier.3.bias",
    ]
    pre = record["import"]["preprocessing"]
    assert pre["resize"] == round(32 * 256 / 224) and pre["interpolation"] == "bilinear"
    assert pre["mean"] == pytest.approx([0.485, 0.456, 0.406])
    model, _ = load_model(run)
    assert torch.equal(
        model.state_dict()["features.0.0.weight"], theirs.state_dict()["features.0.0.weight"]
    )
    got = evaluate_checkpoint(run, batch_size=8)
    acc, nll = manual_metrics(model, run, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert got["acc"] == pytest.approx(acc, abs=1e-6) and got["nll"] == pytest.approx(nll, rel=1e-4)


def test_torchvision_enum_errors(offline, tmp_path, monkeypatch):
    pytest.importorskip("torchvision")
    data = rgb_folder(tmp_path / "images")
    out = tmp_path / "never"
    with pytest.raises(VitlensError, match="IMAGENET1K_V1"):  # the members are listed
        import_model(
            "torchvision:resnet18", out, weights="IMAGENET9K_V7", image_size=32, dataset=data
        )
    monkeypatch.delenv("HF_HUB_OFFLINE")
    import torch.hub

    def unreachable(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)
    with pytest.raises(VitlensError, match="TORCH_HOME") as err:
        import_model("torchvision:resnet18", out, weights="DEFAULT", image_size=32, dataset=data)
    assert "resnet18-f37072fd.pth" in str(err.value) and "unreachable" in str(err.value)
    assert not out.exists()


def test_cli_reports_a_missing_hub_model_with_status_2(offline, tmp_path, monkeypatch, capsys):
    from vitlens import cli

    monkeypatch.setattr(
        "sys.argv", ["vitlens", "import", "hf:org/none", "--out", str(tmp_path / "r")]
    )
    with pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code == 2 and "HF_HUB_CACHE" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_recorded_preprocessing_round_trips(tmp_path):
    from vitlens.data.preprocess import Preprocessing, from_hf

    p = from_hf(
        {"size": {"shortest_edge": 256}, "do_center_crop": True, "crop_size": 224, "resample": 2,
         "image_mean": [0.5] * 3, "image_std": [0.5] * 3},
        112,
        "preprocessor_config.json",
    )  # fmt: skip
    assert (p.resize, p.interpolation) == (128, "bilinear")  # 256/224 of 112
    assert Preprocessing.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    with pytest.raises(VitlensError, match="damaged"):
        Preprocessing.from_dict({"mean": [0.5]})
