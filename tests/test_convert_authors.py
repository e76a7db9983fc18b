"""The authors' CIFAR-100 release layouts (`authors:NAME`) load into vitlens models.

`data/authors_release_keys.json` holds the exact key names and shapes of each layout, dumped
from the authors' own classes (timm 0.5.4 for ViT-Ti, PiT-Ti and Swin-Ti; their repository's
`models/` code for ResNet-50 and AlterNet-50). Each test renames a vitlens model's weights into
that layout with the inverse map, checks the keys and shapes against the dump, wraps them as the
release does (`{"name", "state_dict"}`), converts them back and compares outputs. The AlterNet
attention, whose conversion reshapes tensors, is also checked against an independent transcription
of the authors' `LocalAttention` forward.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vitlens.errors import VitlensError
from vitlens.models import create_model
from vitlens.models.convert import AUTHORS, load_converted

LAYOUTS = json.loads((Path(__file__).parent / "data" / "authors_release_keys.json").read_text())


def _rename(state: dict, rules: list) -> dict:
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            new, n = re.subn(pattern, repl, key, count=1)
            if n:
                key = new
                break
        out[key] = value
    return out


def _layer(m: re.Match) -> str:
    return f"layer{int(m.group(1)) + 1}.{m.group(2)}"


TIMM_054 = {
    "vit_ti": [(r"^patch_embed\.", "patch_embed.proj.")],
    "pit_ti": [
        (r"^patch_embed\.", "patch_embed.conv."),
        (r"^stages\.(\d+)\.", r"transformers.\1.blocks."),
        (r"^pools\.(\d+)\.", r"transformers.\1.pool."),  # timm 0.5.4 pools at a stage's end
    ],
    "swin_ti": [
        (r"^patch_embed\.", "patch_embed.proj."),
        (r"^embed_norm\.", "patch_embed.norm."),
        (r"^stages\.(\d+)\.(\d+)\.attn\.attn\.", r"layers.\1.blocks.\2.attn."),
        (r"^stages\.(\d+)\.(\d+)\.", r"layers.\1.blocks.\2."),
        (r"^merges\.(\d+)\.", r"layers.\1.downsample."),
    ],
}
RESNET = [
    (r"^stem\.", "layer0."),
    (r"^stages\.(\d+)\.(\d+)\.conv(\d)\.", lambda m: f"{_layer(m)}.conv{m.group(3)}.0."),
    (r"^stages\.(\d+)\.(\d+)\.bn(\d)\.", lambda m: f"{_layer(m)}.conv{m.group(3)}.1."),
    (r"^stages\.(\d+)\.(\d+)\.downsample\.", lambda m: f"{_layer(m)}.shortcut."),
    (r"^head\.", "classifier.0.dense."),
]
ALTERNET_CONV = [
    (r"^stem\.0\.", "layer0.layer0.0."),
    (r"^stages\.(\d+)\.(\d+)\.bn1\.", lambda m: f"{_layer(m)}.bn."),
    (r"^stages\.(\d+)\.(\d+)\.conv1\.", lambda m: f"{_layer(m)}.conv1."),
    (r"^stages\.(\d+)\.(\d+)\.bn(\d)\.", lambda m: f"{_layer(m)}.conv{m.group(3)}.0."),
    (r"^stages\.(\d+)\.(\d+)\.conv(\d)\.", lambda m: f"{_layer(m)}.conv{m.group(3)}.2."),
    (r"^stages\.(\d+)\.(\d+)\.downsample\.", lambda m: f"{_layer(m)}.shortcut.0."),
    (r"^final_act\.0\.", "classifier.0.bn."),
    (r"^head\.", "classifier.0.dense."),
]
ALTERNET_MSA = [
    (r"^stages\.(\d+)\.(\d+)\.bn1\.", lambda m: f"{_layer(m)}.norm1."),
    (r"^stages\.(\d+)\.(\d+)\.conv1\.", lambda m: f"{_layer(m)}.conv."),
    (r"^stages\.(\d+)\.(\d+)\.bn2\.", lambda m: f"{_layer(m)}.norm2."),
    (r"^stages\.(\d+)\.(\d+)\.attn\.rel_pos_bias", lambda m: f"{_layer(m)}.attn.pos_embedding"),
    (r"^stages\.(\d+)\.(\d+)\.attn\.attn\.proj\.", lambda m: f"{_layer(m)}.attn.attn.to_out.0."),
    (r"^stages\.(\d+)\.(\d+)\.attn\.attn\.qkv\.", lambda m: f"{_layer(m)}.attn.attn.qkv."),
]


def _alternet_to_authors(model: nn.Module) -> dict:
    """Our AlterNet's weights in the authors' layout (AttentionBlockB tensors reshaped)."""
    msa = {
        f"stages.{s}.{i}."
        for s, ks in enumerate(model.kinds)
        for i, k in enumerate(ks)
        if k == "msa"
    }
    state = {}
    for key, value in model.state_dict().items():
        is_msa = any(key.startswith(p) for p in msa)
        state.update(_rename({key: value}, ALTERNET_MSA if is_msa else ALTERNET_CONV))
    for key in [k for k in state if k.endswith(".attn.attn.qkv.weight")]:
        qkv = state.pop(key)[:, :, None, None]  # Linear -> 1x1 conv
        inner = qkv.shape[0] // 3
        state[key.replace("qkv", "to_q")] = qkv[:inner]
        state[key.replace("qkv", "to_kv")] = qkv[inner:]
    for key in [k for k in state if k.endswith(".to_out.0.weight")]:
        state[key] = state[key][:, :, None, None]
    for key in [k for k in state if k.endswith(".pos_embedding")]:
        side = int(state[key].numel() ** 0.5)
        state[key] = state[key].reshape(side, side).flip(0, 1)  # offsets key - query
    return state


def to_authors(name: str, model: nn.Module) -> dict:
    """The release file the authors would have saved for `model`: {"name", "state_dict"}."""
    if name == "alternet50":
        state = _alternet_to_authors(model)
    else:
        state = _rename(model.state_dict(), RESNET if name == "resnet50" else TIMM_054[name])
    # timm 0.5.4 saved Swin's index and masks as buffers; the converter drops them.
    for key, shape in LAYOUTS[name].items():
        if key.endswith(("relative_position_index", "attn_mask")):
            state[key] = torch.zeros(shape)
    return {"name": name, "state_dict": state}


@torch.no_grad()
def perturbed(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(AUTHORS[name].model, num_classes=100)
    gen = torch.Generator().manual_seed(1)
    for p in model.parameters():
        p.add_(torch.randn(p.shape, generator=gen), alpha=0.02)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0.0, 0.1, generator=gen)
            m.running_var.uniform_(0.8, 1.2, generator=gen)
    return model.eval()


@pytest.mark.parametrize("name", list(AUTHORS))
def test_a_release_in_the_authors_layout_loads_with_equal_outputs(name):
    ours = perturbed(name)
    release = to_authors(name, ours)
    layout = {k: list(v.shape) for k, v in release["state_dict"].items()}
    assert layout == LAYOUTS[name]  # exactly the authors' key names and shapes
    fresh = create_model(AUTHORS[name].model, num_classes=100).eval()
    load_converted(fresh, release, AUTHORS[name].source)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), ours(x), rtol=0, atol=0)


def authors_local_attention(x, to_q, to_kv, to_out_w, to_out_b, table, heads):
    """The authors' LocalAttention + Attention2d forward on one p x p window (models/alternet.py,
    models/attentions.py), transcribed with plain torch."""
    b, _, p, _ = x.shape
    q, (k, v) = F.conv2d(x, to_q), F.conv2d(x, to_kv).chunk(2, dim=1)

    def heads_first(t):  # 'b (h d) x y -> b h (x y) d'
        return t.reshape(b, heads, -1, p * p).transpose(-1, -2)

    q, k, v = map(heads_first, (q, k, v))
    pos = torch.tensor([[i, j] for i in range(p) for j in range(p)])
    rel = pos[None, :, :] - pos[:, None, :] + p - 1
    dots = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5 + table[rel[..., 0], rel[..., 1]]
    out = dots.softmax(dim=-1) @ v  # (b, h, n, d) -> 'b (h d) x y'
    out = out.transpose(-1, -2).reshape(b, -1, p, p)
    return F.conv2d(out, to_out_w, to_out_b)


def test_converted_alternet_attention_computes_what_the_authors_code_does():
    ours = perturbed("alternet50")
    state = to_authors("alternet50", ours)["state_dict"]
    fresh = create_model("alternet50", num_classes=100).eval()
    load_converted(fresh, {"state_dict": state}, "authors_alternet")
    layer, stage, index = "layer4.3", 3, 3  # the last MSA block: 24 heads, width 512
    unit = fresh.stages[stage][index]
    x = torch.randn(2, 512, 4, 4, generator=torch.Generator().manual_seed(3))
    theirs = authors_local_attention(
        x,
        state[f"{layer}.attn.attn.to_q.weight"],
        state[f"{layer}.attn.attn.to_kv.weight"],
        state[f"{layer}.attn.attn.to_out.0.weight"],
        state[f"{layer}.attn.attn.to_out.0.bias"],
        state[f"{layer}.attn.pos_embedding"],
        heads=24,
    )
    with torch.no_grad():
        torch.testing.assert_close(unit.attn(x), theirs, rtol=1e-5, atol=1e-5)


def test_a_release_for_another_model_names_the_keys_that_do_not_fit():
    release = to_authors("resnet50", perturbed("resnet50"))
    with pytest.raises(VitlensError, match=r"missing keys \(\d+\): .*\.\.\. \(\d+ more\)"):
        load_converted(create_model("alternet50", num_classes=100), release, "authors_alternet")
