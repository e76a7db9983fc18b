"""Training: metrics, schedule, checkpoints, bit-exact resume, bad input, torchrun, fine-tuning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from vitlens.config import load_config_file, make_config
from vitlens.errors import ConfigError, VitlensError
from vitlens.models import create_model
from vitlens.train.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from vitlens.train.loop import epoch_batches
from vitlens.train.metrics import MetricSums
from vitlens.train.runs import init_from_checkpoint, interpolate_pos_embed
from vitlens.train.schedule import warmup_cosine

# A small, fast run on the shipped dataset: 500 training images, 2 epochs of 16 steps.
SMALL = ["--fraction", "0.05", "--batch-size", "32", "--epochs", "2", "--quiet"]


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vitlens.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


# -- metrics and schedule --------------------------------------------------------------------


def test_metrics_match_hand_computation():
    logits = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.2], [5.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 0])
    sums = MetricSums(bins=10)
    sums.add(logits[:2], labels[:2])
    sums.add(logits[2:], labels[2:])  # accumulating batches equals one big batch
    r = sums.result()
    p = logits.double().softmax(1)
    conf, pred = p.max(1)
    hit = (pred == labels).double()
    assert r["acc"] == pytest.approx(hit.mean().item())
    assert r["nll"] == pytest.approx(F.cross_entropy(logits.double(), labels).item())
    ece = 0.0
    for lo in torch.arange(10) / 10:
        inside = (conf > lo) & (conf <= lo + 0.1)
        if inside.any():
            ece += inside.double().mean() * (conf[inside].mean() - hit[inside].mean()).abs()
    assert r["ece"] == pytest.approx(float(ece))
    sure = conf >= 0.9
    assert r["freq_confident"] == pytest.approx(sure.double().mean().item())
    assert r["acc_confident"] == pytest.approx(hit[sure].mean().item())
    merged = MetricSums(bins=10)
    merged.load_tensor(sums.as_tensor())
    assert merged.result() == r


def test_warmup_then_cosine():
    lrs = [warmup_cosine(s, total=100, warmup=10, base_lr=1.0, min_lr=0.0) for s in range(100)]
    assert lrs[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.5, abs=0.02)
    assert lrs[-1] < 1e-3 and all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))


def test_epoch_batches_shard_evenly_and_cover_everything():
    single = epoch_batches(10, 4, seed=1, epoch=0)
    assert sorted(i for b in single for i in b) == list(range(10))
    ranks = [epoch_batches(10, 2, seed=1, epoch=0, rank=r, world=2) for r in range(2)]
    flat = [i for r in ranks for b in r for i in b]
    assert len(flat) == 10 and sorted(flat) == list(range(10))
    assert [len(b) for b in ranks[0]] == [len(b) for b in ranks[1]]
    assert epoch_batches(10, 4, seed=1, epoch=1) != single


# -- config ----------------------------------------------------------------------------------


def test_config_presets_and_type_errors():
    paper = make_config("paper", model="vit_ti")
    assert (paper.epochs, paper.warmup_epochs, paper.batch_size, paper.lr) == (300, 5, 96, 1.25e-4)
    assert (paper.weight_decay, paper.clip_grad, paper.drop_path) == (0.05, 5.0, 0.1)
    assert paper.mixup and paper.augment == "paper" and paper.label_smoothing == 0.1
    with pytest.raises(ConfigError, match="lr"):
        make_config("quick", lr="fast")
    with pytest.raises(ConfigError, match="epochs"):
        make_config("quick", epochs=2.5)
    with pytest.raises(ConfigError, match="augment"):
        make_config("quick", augment="heavy")
    with pytest.raises(ConfigError, match="unknown config key"):
        make_config("quick", learning_rate=0.1)


def test_config_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config_file(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "missing.yaml")


# -- checkpoints -----------------------------------------------------------------------------


def test_checkpoint_round_trip_and_truncation(tmp_path):
    model = create_model("resnet_nano", num_classes=3)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path, "last", model, opt, {"epoch": 1, "note": "x"})
    record, weights = read_checkpoint(path)
    assert record["epoch"] == 1
    for k, v in model.state_dict().items():
        assert torch.equal(weights[k], v)
    data = (tmp_path / "last.model.safetensors").read_bytes()
    (tmp_path / "last.model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(path)
    assert not list(tmp_path.glob(".*tmp*")), "no temporary files are left behind"


def test_pos_embed_interpolation_is_exact_for_constant_grids():
    src = torch.cat([torch.full((1, 1, 4), 7.0), torch.ones(1, 49, 4) * 3.0], dim=1)
    out = interpolate_pos_embed(src, torch.Size([1, 65, 4]), prefix=1)
    assert out.shape == (1, 65, 4)
    assert torch.equal(out[:, 0], src[:, 0]) and torch.allclose(out[:, 1:], torch.tensor(3.0))


# -- full runs through the CLI -----------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ref"
    done = cli("train", "vit_nano", "--out", str(out), "--seed", "3", *SMALL)
    assert done.returncode == 0, done.stderr
    return out


def test_run_folder_contents(reference_run):
    rows = [json.loads(x) for x in (reference_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0]["train_samples"] == 500 and rows[0]["test_samples"] == 2000
    # Two short epochs on 500 images: well above chance (0.1), and the training NLL falls.
    assert 0.2 < rows[-1]["test_acc"] <= 1 and rows[-1]["train_nll"] < rows[0]["train_nll"]
    assert (reference_run / "config.yaml").exists()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(reference_run / "tensorboard"))
    events.Reload()
    accs = [e.value for e in events.Scalars("test/acc")]
    assert accs == pytest.approx([r["test_acc"] for r in rows], rel=1e-6)


def test_killed_run_resumes_bit_exactly(reference_run, tmp_path):
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "vitlens.cli", "train", "vit_nano", "--out", str(out)]
    args += ["--seed", "3", "--checkpoint-every", "5", *SMALL]
    proc = subprocess.Popen(args, env={**os.environ, "OMP_NUM_THREADS": "1"})
    last = out / "checkpoints" / "last.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and json.loads(last.read_text()).get("batch", 0) > 0:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(last.read_text())
    assert killed_at["batch"] > 0, "the kill landed mid-epoch"
    done = cli("train", "vit_nano", "--out", str(out), "--resume", "--quiet")
    assert done.returncode == 0, done.stderr
    ours = load_file(str(out / "checkpoints" / "final.model.safetensors"))
    ref = load_file(str(reference_run / "checkpoints" / "final.model.safetensors"))
    assert ours.keys() == ref.keys()
    assert all(torch.equal(ours[k], ref[k]) for k in ref)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(x) for x in (reference_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["test_acc"] for r in rows] == [r["test_acc"] for r in ref_rows]


def test_bad_input_exits_2_and_keeps_earlier_runs(reference_run, tmp_path):
    before = {p: p.read_bytes() for p in reference_run.rglob("*") if p.is_file()}
    cases = [
        ("train", "vit_nano", "--dataset", "imagenet-22k", "--out", str(tmp_path / "a")),
        (
            "train",
            "vit_nano",
            "--dataset",
            "cifar10",
            "--data-dir",
            str(tmp_path / "empty"),
            "--out",
            str(tmp_path / "b"),
        ),
        ("train", "vit_nano", "--out", str(reference_run), "--quiet"),  # would overwrite
        ("train", "vit_9000", "--out", str(tmp_path / "c")),
        ("eval", str(tmp_path / "nothing-here")),
    ]
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("lr: fast\n")
    cases.append(("train", "vit_nano", "--config", str(bad_yaml), "--out", str(tmp_path / "d")))
    for args in cases:
        done = cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr and "error" in done.stderr.lower(), args
    assert {p: p.read_bytes() for p in reference_run.rglob("*") if p.is_file()} == before


def test_truncated_or_foreign_checkpoints_are_refused(reference_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(reference_run, copy)
    weights = copy / "checkpoints" / "final.model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    done = cli("eval", str(copy))
    assert done.returncode == 2 and "truncated" in done.stderr
    # A ViT checkpoint cannot start a ResNet, nor resume as one.
    done = cli(
        "train", "resnet_nano", "--init", str(reference_run), "--out", str(tmp_path / "r"), *SMALL
    )
    assert done.returncode == 2 and "not a compatible model" in done.stderr
    with pytest.raises(VitlensError):
        init_from_checkpoint(create_model("resnet_nano", num_classes=10), reference_run)


def test_eval_command_reports_metrics_as_json(reference_run, tmp_path):
    out = tmp_path / "m.json"
    done = cli("eval", str(reference_run), "--json", str(out))
    assert done.returncode == 0, done.stderr
    metrics = json.loads(out.read_text())
    rows = [json.loads(x) for x in (reference_run / "metrics.jsonl").read_text().splitlines()]
    assert metrics["samples"] == 2000
    assert metrics["acc"] == pytest.approx(rows[-1]["test_acc"])


def test_fine_tune_at_another_size_and_class_count(reference_run, tmp_path):
    # Pre-trained at 28x28 with 10 classes; fine-tuned at 32x32 with 4 classes.
    src_record, src = read_checkpoint(reference_run / "checkpoints" / "final.json")
    assert src_record["model_spec"]["image_size"] == 28
    model = create_model("vit_nano", num_classes=4, image_size=32, in_chans=1)
    report = init_from_checkpoint(model, reference_run)
    assert set(report["new"]) == {"head.weight", "head.bias"}
    assert report["interpolated"] == ["pos_embed"]
    state = model.state_dict()
    assert torch.equal(state["blocks.3.attn.qkv.weight"], src["blocks.3.attn.qkv.weight"])
    expected = interpolate_pos_embed(src["pos_embed"], state["pos_embed"].shape, prefix=1)
    assert torch.equal(state["pos_embed"], expected)
    # The first forward pass uses those weights: equal to a model loaded by hand.
    twin = create_model("vit_nano", num_classes=4, image_size=32, in_chans=1)
    twin.load_state_dict(state)
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(model.eval()(x), twin.eval()(x))


def test_fine_tune_cli_on_an_image_folder(reference_run, tmp_path):
    from PIL import Image

    root = tmp_path / "shapes"
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 12), ("test", 4)):
        for c in range(4):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                img = (torch.rand(28, 28, generator=g) * 60 + 60 * c).byte().numpy()
                Image.fromarray(img, mode="L").save(folder / f"{i}.png")
    out = tmp_path / "ft"
    done = cli(
        "train",
        "vit_nano",
        "--dataset",
        f"imagefolder:{root}",
        "--image-size",
        "32",
        "--init",
        str(reference_run),
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--out",
        str(out),
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    record, _ = read_checkpoint(out / "checkpoints" / "final.json")
    assert record["model_spec"]["image_size"] == 32 and record["model_spec"]["num_classes"] == 4
    assert record["init"]["interpolated"] == ["pos_embed"]


def test_torchrun_two_gloo_processes_match_the_single_process_run(reference_run, tmp_path):
    out = tmp_path / "ddp"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            "29533",
            "-m",
            "vitlens.cli",
            "train",
            "vit_nano",
            "--out",
            str(out),
            "--seed",
            "3",
            "--device",
            "cpu",
            *SMALL,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (reference_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_samples"] for r in rows] == [r["train_samples"] for r in ref]
    assert [r["test_samples"] for r in rows] == [2000, 2000]
    assert [r["step"] for r in rows] == [r["step"] for r in ref]
    # The gathered test metrics are those of the saved model on the whole test set.
    done = cli("eval", str(out), "--json", str(tmp_path / "e.json"))
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "e.json").read_text())
    assert metrics["acc"] == pytest.approx(rows[-1]["test_acc"])
    assert metrics["nll"] == pytest.approx(rows[-1]["test_nll"], rel=1e-6)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path):
    config = tmp_path / "explode.yaml"
    config.write_text("lr: 1.0e+12\nclip_grad: null\nwarmup_epochs: 0\ncheckpoint_every: 1\n")
    out = tmp_path / "nan"
    done = cli("train", "vit_nano", "--config", str(config), "--out", str(out), *SMALL)
    assert done.returncode == 2, done.stderr
    assert "loss became" in done.stderr and "last good checkpoint" in done.stderr
    record, weights = read_checkpoint(out / "checkpoints" / "last.json")
    assert record["batch"] >= 1
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
    assert not (out / "checkpoints" / "final.json").exists()


def test_freezing_the_backbone_trains_only_the_head():
    from vitlens.train.runs import freeze_backbone

    model = create_model("swin_nano", num_classes=5)
    trainable = freeze_backbone(model)
    assert trainable == 128 * 5 + 5
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {"head.weight", "head.bias"}
