"""Block kinds say what mixes the tokens, on every architecture family the coverage table lists.

The fast tests build one small random-init model per family the checks name; the slow test
rebuilds every model of docs/coverage.md and fails when one that was described no longer is, or
when its blocks by kind change without the table being regenerated (python scripts/coverage.py).
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vitlens.anatomy import anatomy_of
from vitlens.anatomy.attention import explicit_sdpa

ROOT = Path(__file__).resolve().parents[1]


def coverage_script():
    spec = importlib.util.spec_from_file_location("coverage_script", ROOT / "scripts/coverage.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["coverage_script"] = module
    spec.loader.exec_module(module)
    return module


def kinds_of(name: str) -> Counter:
    model, _ = coverage_script().build(name)
    return Counter(b.kind for b in anatomy_of(model).blocks)


# (model, kinds it must have, kinds it must not have)
KIND_CHECKS = [
    ("timm:test_vit", {"msa", "mlp"}, {"conv", "block"}),
    ("timm:test_resnet", {"conv"}, {"msa", "block"}),
    ("timm:poolformer_s12", {"pool"}, {"conv", "msa"}),
    ("timm:mixer_s16_224", {"token_mlp"}, {"conv", "msa"}),
    ("timm:resmlp_12_224", {"token_mlp"}, {"conv", "msa"}),
    ("timm:swinv2_tiny_window8_256", {"msa"}, {"block"}),
    ("timm:swinv2_cr_tiny_224", {"msa"}, {"block"}),
    ("timm:test_maxvit", {"msa", "conv"}, {"block"}),
    ("timm:levit_128s", {"msa"}, {"block"}),
    ("timm:mobilevit_xxs", {"msa", "conv"}, {"block"}),
    ("timm:efficientformer_l1", {"msa", "pool"}, {"block"}),
    ("timm:efficientformerv2_s0", {"msa", "conv"}, {"block"}),
    ("timm:gcvit_tiny", {"msa"}, {"block"}),
    ("timm:nest_tiny", {"msa"}, {"block"}),
    ("timm:xcit_nano_12_p8_224", {"channel_msa"}, {"msa"}),  # XCA: attention over channels
    ("timm:edgenext_small", {"channel_msa", "conv"}, {"msa"}),  # its XCA, by another name
    ("timm:davit_tiny", {"msa", "channel_msa"}, {"block"}),
    ("timm:volo_d1_224", {"msa", "conv"}, {"block"}),  # outlookers: local dynamic kernels
    ("torchvision:swin_v2_t", {"msa", "mlp"}, {"block"}),
]


@pytest.mark.parametrize(("name", "must", "must_not"), KIND_CHECKS, ids=[c[0] for c in KIND_CHECKS])
def test_a_blocks_kind_says_what_mixes_its_tokens(name, must, must_not):
    pytest.importorskip(name.split(":")[0])
    kinds = kinds_of(name)
    assert must <= set(kinds), kinds
    assert not must_not & set(kinds), kinds


# Refused or broken before: each is now described.
ONCE_REFUSED = [
    "torchvision:googlenet", "torchvision:inception_v3", "torchvision:mnasnet0_5",
    "torchvision:shufflenet_v2_x0_5", "torchvision:regnet_x_400mf", "torchvision:regnet_y_400mf",
    "torchvision:maxvit_t", "timm:cait_xxs24_224", "timm:convit_tiny", "timm:tnt_s_patch16_224",
    "timm:crossvit_tiny_240", "timm:twins_svt_small", "timm:visformer_tiny", "timm:regnetx_002",
]  # fmt: skip


@pytest.mark.parametrize("name", ONCE_REFUSED)
def test_families_once_refused_are_described(name):
    pytest.importorskip(name.split(":")[0])
    kinds = kinds_of(name)
    assert kinds["embed"] == 1 and sum(kinds.values()) >= 4, kinds
    attention = {"maxvit", "cait", "convit", "tnt", "crossvit", "twins", "visformer"}
    if any(a in name for a in attention):
        assert kinds["msa"] >= 2, kinds


@pytest.mark.parametrize(
    "name",
    [
        "timm:swinv2_tiny_window8_256",
        "timm:levit_128s",
        "timm:gcvit_tiny",
        "timm:test_maxvit",
        "timm:pvt_v2_b0",  # keys pooled by a strided conv
        "timm:twins_svt_small",  # windows before heads (B, W, heads, N, N), and pooled keys
        "timm:mvitv2_tiny",  # pooled keys, and pooled queries at stage transitions
        "timm:nextvit_small",
        "timm:efficientformerv2_s0",  # queries and keys both on the grid pooled by 2
        "timm:convit_tiny",  # gated positional attention: the module's own mixed map
    ],
)
def test_maps_read_are_probabilities_over_their_keys(name):
    pytest.importorskip("timm")
    from vitlens.analysis.attention_maps import capture_attention

    model, size = coverage_script().build(name)
    capture = capture_attention(model, torch.randn(1, 3, size, size))
    msa = [b for b in anatomy_of(model).blocks if b.kind == "msa"]
    assert len(capture.blocks) == len(msa) and not capture.unread
    for maps in capture.blocks:
        attn = maps.attn
        assert attn.min() >= 0
        torch.testing.assert_close(attn.sum(-1), torch.ones_like(attn.sum(-1)))


def test_pooled_key_maps_equal_the_modules_own_attention_computed_by_hand():
    pytest.importorskip("timm")
    from vitlens.analysis.attention_maps import capture_attention

    model, size = coverage_script().build("timm:pvt_v2_b0")
    attn_module = model.stages[0].blocks[0].attn
    seen = {}

    def keep_input(_m, args):
        seen["x"], seen["size"] = args[0].detach(), args[1]

    handle = attn_module.register_forward_pre_hook(keep_input)
    capture = capture_attention(model, torch.randn(1, 3, size, size))
    handle.remove()
    # PVT v2: queries on the 56 x 56 grid, keys and values from the grid reduced by a
    # strided conv (sr) and a LayerNorm, one head at this stage.
    m, x, (H, W) = attn_module, seen["x"], seen["size"]
    B, N, C = x.shape
    q = m.q(x).reshape(B, N, m.num_heads, -1).transpose(1, 2)
    reduced = m.norm(m.sr(x.transpose(1, 2).reshape(B, C, H, W)).flatten(2).transpose(1, 2))
    k = m.kv(reduced).reshape(B, -1, 2, m.num_heads, C // m.num_heads).permute(2, 0, 3, 1, 4)[0]
    expected = (q @ k.transpose(-2, -1) * m.scale).softmax(-1)
    first = capture.blocks[0]
    assert first.block.name == "stage0.block0.msa"
    assert first.geometry.keys == (7, 7) and first.grid == (56, 56)
    torch.testing.assert_close(first.attn.detach(), expected, rtol=1e-4, atol=1e-6)


def test_explicit_sdpa_equals_the_fused_kernel():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8, generator=gen) for _ in range(3))
    mask = torch.randn(7, 7, generator=gen)
    for kw in (
        {},
        {"is_causal": True},
        {"attn_mask": mask},
        {"attn_mask": mask > 0},
        {"scale": 0.3},
    ):
        out, probs = explicit_sdpa(q, k, v, **kw)
        torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, **kw))
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, 3, 7))


def table_rows() -> list[tuple[str, str, str, str]]:
    """(model, blocks by kind, attention computations, maps read) of each row of the table."""
    text = (ROOT / "docs" / "coverage.md").read_text()
    row = r"^\| `([^`]+)` \| \d+ \| ([^|]+) \| (\d+) \| (\d+) \|"
    return re.findall(row, text, flags=re.M)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "kinds", "attention", "maps"), table_rows(), ids=[r[0] for r in table_rows()]
)
def test_the_coverage_table_stays_true(name, kinds, attention, maps):
    pytest.importorskip(name.split(":")[0])
    if kinds.strip() == "—":
        pytest.skip("not described in the table")
    row = coverage_script().survey(name)
    assert not row.error, f"{name} was described and no longer is: {row.error}"
    now = ", ".join(f"{n} {k}" for k, n in row.kinds.items())
    assert now == kinds.strip(), "blocks changed: regenerate docs/coverage.md"
    assert (row.attention, row.maps) == (int(attention), int(maps)), "maps read changed"


@pytest.mark.slow
@pytest.mark.parametrize("name", ONCE_REFUSED)
def test_the_six_analyses_run_or_refuse_on_families_once_refused(name):
    pytest.importorskip(name.split(":")[0])
    script = coverage_script()
    row = script.Row(name)
    model, row.size = script.build(name)
    script.run_analyses(model, row)
    outcomes = row.analyses
    # Each runs, or refuses with its reason (e.g. maps it cannot place): never a raw exception.
    assert not [o for o in outcomes.values() if o.startswith("RAW")], outcomes
    assert outcomes["fourier"] == outcomes["variance"] == outcomes["cka"] == "ok", outcomes
