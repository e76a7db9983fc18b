"""vitlens: how do vision transformers work? (Park & Kim, ICLR 2022) as software."""

from vitlens.errors import VitlensError

__version__ = "0.1.0"

# What a notebook types first, without deep imports. Loaded on first use, so `import vitlens`
# stays light (no torch until one of these is asked for).
_LAZY = {
    "create_model": "vitlens.models",
    "load_model": "vitlens.train.runs",
    "load_result": "vitlens.analysis.result",
    "plot": "vitlens.analysis.display",
    "explain": "vitlens.explaining",
    "anatomy_of": "vitlens.anatomy",
    "run_analysis": "vitlens.analysis.runner",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vitlens' has no attribute {name!r}")


__all__ = ["VitlensError", "__version__", *_LAZY]
