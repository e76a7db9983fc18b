"""The anatomy contract (docs/ARCHITECTURE.md): one `Anatomy` per model — blocks, taps, lesions,
logits and explicit attention."""

from vitlens.anatomy.attention import (
    attention_maps,
    explicit_attention,
    force_mha_weights,
    switch_flag,
)
from vitlens.anatomy.core import (
    anatomy_of,
    describe,
    lesionable,
    lesioned,
    record,
    register_adapter,
    tapping,
    unwrap,
)
from vitlens.anatomy.spec import (
    KINDS,
    NCHW,
    NHWC,
    VECTOR,
    Anatomy,
    Block,
    InputSpec,
    Layout,
    no_switch,
    output_logits,
    tokens,
)

__all__ = [
    "Anatomy",
    "InputSpec",
    "anatomy_of",
    "force_mha_weights",
    "no_switch",
    "output_logits",
    "switch_flag",
    "KINDS",
    "NCHW",
    "NHWC",
    "VECTOR",
    "Block",
    "Layout",
    "attention_maps",
    "describe",
    "explicit_attention",
    "lesionable",
    "lesioned",
    "record",
    "register_adapter",
    "tapping",
    "tokens",
    "unwrap",
]
