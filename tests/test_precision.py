"""Training precision: hardware detection, the `auto` decision, the fp32-attention mode, and a
bf16 run that resumes bit-exactly (no timing is asserted anywhere)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from vitlens.config import make_config
from vitlens.errors import ConfigError
from vitlens.models import create_model
from vitlens.train import Trainer
from vitlens.train import precision as P

# A tiny ViT on 200 images: 4 steps of 50 per epoch, so bf16 (emulated on most CI CPUs) is quick.
TINY = dict(
    model="vit_nano",
    model_args=dict(dim=32, depth=1, heads=2, mlp_dim=64),
    fraction=0.02,
    batch_size=50,
    epochs=2,
    device="cpu",
)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path / "cache"))


def fake_hardware(monkeypatch, features: list[str]) -> None:
    monkeypatch.setattr(P, "cpu_bf16_features", lambda: list(features))


def test_cpuinfo_flags_are_read_for_x86_and_arm():
    x86 = "processor: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile avx512_bf16\n"
    assert P.bf16_flags(x86) == {"amx_bf16", "avx512_bf16"}
    assert P.bf16_flags("flags : fpu sse avx2 fma\n") == set()
    assert P.bf16_flags("Features\t: fp asimd sve bf16 i8mm\n") == {"bf16"}
    assert P.bf16_flags("") == set()


def test_auto_falls_back_to_fp32_where_bf16_is_not_native(monkeypatch):
    fake_hardware(monkeypatch, [])
    monkeypatch.setattr(P, "time_modes", lambda *a, **k: pytest.fail("no probe without bf16"))
    cfg = make_config(**TINY)
    model = create_model("resnet_nano", num_classes=10, in_chans=1, image_size=28)
    probe = dict(input_shape=(4, 1, 28, 28), num_classes=10, model_spec={})
    choice = P.choose_precision(cfg, model, torch.device("cpu"), **probe)
    assert (choice.mode, choice.native_bf16) == ("fp32", False)
    assert "no native bf16" in choice.reason
    # Asked for explicitly, bf16 is honoured even where it is emulated, and says so.
    asked = make_config(**{**TINY, "precision": "bf16"})
    with pytest.warns(UserWarning, match="emulated"):
        choice = P.choose_precision(asked, model, torch.device("cpu"), **probe)
    assert choice.mode == "bf16" and "emulated" in choice.reason
    # On MPS vitlens stays in fp32.
    assert P.native_bf16(torch.device("mps"))[0] is False


def test_auto_on_native_hardware_takes_the_measured_winner_and_caches_it(monkeypatch):
    fake_hardware(monkeypatch, ["amx_bf16"])
    calls = []

    def timings(model, modes, **kw):
        calls.append(list(modes))
        return {"fp32": 1.0, "bf16": 0.7, "bf16-fp32attn": 0.6}

    monkeypatch.setattr(P, "time_modes", timings)
    cfg = make_config(**TINY)
    vit = create_model("vit_nano", num_classes=10, in_chans=1, image_size=28)
    probe = dict(input_shape=(4, 1, 28, 28), num_classes=10, model_spec={"name": "vit_nano"})
    choice = P.choose_precision(cfg, vit, torch.device("cpu"), **probe)
    assert choice.mode == "bf16-fp32attn" and choice.seconds_per_step["fp32"] == 1.0
    again = P.choose_precision(cfg, vit, torch.device("cpu"), **probe)
    assert again.mode == "bf16-fp32attn" and "cached" in again.reason
    assert calls == [["fp32", "bf16", "bf16-fp32attn"]]  # measured once; attention was a candidate
    # A model without attention is not offered the fp32-attention mode.
    resnet = create_model("resnet_nano", num_classes=10, in_chans=1, image_size=28)
    P.choose_precision(cfg, resnet, torch.device("cpu"), **{**probe, "model_spec": {"r": 1}})
    assert calls[-1] == ["fp32", "bf16"]


def test_fastest_mode_is_never_slower_than_fp32():
    assert P.fastest_mode({"fp32": 1.0, "bf16": 1.2}) == "fp32"
    assert P.fastest_mode({"fp32": 1.0, "bf16": 0.97}) == "fp32"  # within the margin: not worth it
    assert P.fastest_mode({"fp32": 1.0, "bf16": 0.8}) == "bf16"
    assert P.fastest_mode({"fp32": 1.0, "bf16": 0.8, "bf16-fp32attn": 0.7}) == "bf16-fp32attn"
    assert P.fastest_mode({"fp32": 1.0, "bf16": 1.8, "bf16-fp32attn": 0.9}) == "bf16-fp32attn"


def test_fp32_attention_mode_runs_sdpa_in_fp32_and_the_rest_in_bf16():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 10, 8, generator=g) for _ in range(3))
    bias = torch.randn(10, 10, generator=g)
    lin = torch.nn.Linear(8, 8)
    with P.mode_context("bf16-fp32attn", "cpu"):
        assert lin(q).dtype == torch.bfloat16  # matmuls still autocast
        qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
        out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=bias.bfloat16())
    assert out.dtype == torch.bfloat16
    exact = F.scaled_dot_product_attention(
        qb.float(), kb.float(), vb.float(), attn_mask=bias.bfloat16().float()
    )
    assert torch.equal(out, exact.bfloat16())
    with P.mode_context("bf16", "cpu"):
        plain = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=bias.bfloat16())
    assert plain.dtype == torch.bfloat16
    with P.mode_context("fp32", "cpu"):
        assert lin(q).dtype == torch.float32
    with pytest.raises(ValueError, match="unknown precision mode"):
        P.mode_context("fp16", "cpu")


def test_probe_leaves_the_model_and_the_random_state_untouched():
    torch.manual_seed(0)
    model = create_model("vit_nano", num_classes=10, in_chans=1, image_size=28, dim=32, depth=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.get_rng_state()
    seconds = P.time_modes(
        model,
        ["fp32", "bf16-fp32attn"],
        input_shape=(2, 1, 28, 28),
        num_classes=10,
        warmup=0,
        repeats=1,
    )
    assert set(seconds) == {"fp32", "bf16-fp32attn"} and all(s > 0 for s in seconds.values())
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="precision"):
        make_config(**{**TINY, "precision": "fp16"})


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "vit_nano"],
        ["study", "--models", "vit_nano"],
        ["buildup", "--out", "unused"],
    ],
)
def test_bad_precision_on_the_command_line_exits_2(argv, tmp_path, monkeypatch, capsys):
    from vitlens import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["vitlens", *argv, "--precision", "fp16"])
    with pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code == 2 and "precision" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_study_and_buildup_pass_precision_to_each_run(tmp_path, monkeypatch):
    import vitlens.train
    from vitlens.buildup import buildup
    from vitlens.study import Study, StudyPlan

    seen = []

    class Recorder:
        def __init__(self, cfg, out, **kw):
            seen.append(cfg.precision)

        def run(self):
            raise Interrupted

    monkeypatch.setattr(vitlens.train, "Trainer", Recorder)
    plan = StudyPlan.from_preset("quick", models=["vit_nano"], precision="fp32")
    with pytest.raises(Interrupted):
        Study.create(tmp_path / "study", plan, quiet=True).run(workers=1)  # in this process
    with pytest.raises(Interrupted):
        buildup(tmp_path / "buildup", precision="bf16", quiet=True)
    assert seen == ["fp32", "bf16"]


class Interrupted(Exception):
    pass


def test_bf16_run_resumes_bit_exactly_in_its_recorded_precision(tmp_path, monkeypatch):
    ref = tmp_path / "ref"
    fake_hardware(monkeypatch, ["amx_bf16"])  # emulated or not, the numbers are the same
    Trainer(make_config(**TINY, precision="bf16"), ref, quiet=True).run()
    fp32 = tmp_path / "fp32"
    Trainer(make_config(**TINY, precision="fp32"), fp32, quiet=True).run()

    # `auto` on (faked) native hardware where the probe says bf16 wins, killed mid-epoch 2 ...
    monkeypatch.setattr(P, "time_modes", lambda *a, **k: {"fp32": 1.0, "bf16": 0.5})
    original = Trainer._checkpoint

    def checkpoint_then_die(self, run, base, epoch, batch, step, metrics=None):
        original(self, run, base, epoch, batch, step, metrics)
        if epoch == 1 and batch == 2:
            raise Interrupted

    monkeypatch.setattr(Trainer, "_checkpoint", checkpoint_then_die)
    killed = tmp_path / "killed"
    cfg = make_config(**TINY, precision="auto", checkpoint_every=2)
    with pytest.raises(Interrupted):
        Trainer(cfg, killed, quiet=True).run()
    assert json.loads((killed / "precision.json").read_text())["mode"] == "bf16"

    # ... resumes in bf16 from its record, without probing again, and ends where `ref` ended.
    monkeypatch.setattr(Trainer, "_checkpoint", original)
    monkeypatch.setattr(P, "time_modes", lambda *a, **k: pytest.fail("resume must not re-probe"))
    Trainer(cfg, killed, resume=True, quiet=True).run()
    weights = {
        name: load_file(str(tmp_path / name / "checkpoints/final.model.safetensors"))
        for name in ("ref", "killed", "fp32")
    }
    assert all(t.dtype == torch.float32 for t in weights["ref"].values())  # fp32 master weights
    assert all(torch.equal(weights["killed"][k], v) for k, v in weights["ref"].items())
    assert not all(torch.equal(weights["fp32"][k], v) for k, v in weights["ref"].items())
    rows = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["precision"] for r in rows] == ["bf16", "bf16"]
    ref_rows = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_nll"] for r in rows] == [r["train_nll"] for r in ref_rows]


# -- on a GPU (benchmarks/gpu_check.py runs these; elsewhere they skip and say why) -----------

NO_CUDA = "needs a CUDA device: run `python benchmarks/gpu_check.py` on a GPU machine"
cuda = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)]


def on_cuda(test):
    for mark in reversed(cuda):
        test = mark(test)
    return test


@on_cuda
def test_cuda_modes_and_probe():
    device = torch.device("cuda")
    assert P.native_bf16(device)[0] == torch.cuda.is_bf16_supported(including_emulation=False)
    lin = torch.nn.Linear(16, 16).to(device)
    x = torch.randn(4, 16, device=device)
    with P.mode_context("bf16", device):
        assert lin(x).dtype == torch.bfloat16
    q = torch.randn(2, 2, 8, 16, device=device, dtype=torch.bfloat16)
    with P.mode_context("bf16-fp32attn", device):
        out = F.scaled_dot_product_attention(q, q, q)
    exact = F.scaled_dot_product_attention(q.float(), q.float(), q.float())
    assert out.dtype == torch.bfloat16 and torch.equal(out, exact.bfloat16())
    model = create_model("resnet_nano", num_classes=10, in_chans=1, image_size=28).to(device)
    seconds = P.time_modes(model, ["fp32", "bf16"], input_shape=(8, 1, 28, 28), num_classes=10)
    assert set(seconds) == {"fp32", "bf16"}


@on_cuda
def test_cuda_auto_run_trains_in_bf16_with_fp32_master_weights(tmp_path):
    out = tmp_path / "run"
    cfg = make_config(**{**TINY, "device": "cuda", "epochs": 1})
    row = Trainer(cfg, out, quiet=True).run()
    record = json.loads((out / "precision.json").read_text())
    assert record["mode"] == ("bf16" if record["native_bf16"] else "fp32")
    assert row["precision"] == record["mode"] and 0 <= row["test_acc"] <= 1
    weights = load_file(str(out / "checkpoints/final.model.safetensors"))
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in weights.values())
