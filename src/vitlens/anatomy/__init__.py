"""The anatomy contract (DESIGN.md §2): blocks, taps, lesions, explicit attention."""

from vitlens.anatomy.attention import attention_maps, explicit_attention
from vitlens.anatomy.core import (
    describe,
    lesionable,
    lesioned,
    record,
    register_adapter,
    tapping,
    unwrap,
)
from vitlens.anatomy.spec import KINDS, NCHW, NHWC, VECTOR, Block, Layout, tokens

__all__ = [
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
