"""The registered analyses: the built-in ones (every module of `vitlens.analysis` that registers a
spec), entry points in the `vitlens.analyses` group, and any registered at run time.

Nothing else in vitlens lists analyses: the runner, `vitlens analyze`, the study, Result loading
and the report all iterate over `analyses()`.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib import metadata

from vitlens.analysis.spec import AnalysisSpec
from vitlens.errors import UnknownNameError

_SPECS: dict[str, AnalysisSpec] = {}
_loaded = False


def register_analysis(spec: AnalysisSpec) -> AnalysisSpec:
    """Add (or replace) an analysis; returns `spec` so a module can keep it as `SPEC`."""
    _SPECS[spec.name] = spec
    return spec


def load_builtin() -> None:
    """Import every analysis module once (each registers its spec and its Result class)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import vitlens.analysis as package

    for module in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)
    for entry in metadata.entry_points(group="vitlens.analyses"):
        entry.load()


def analyses() -> list[AnalysisSpec]:
    """Every registered analysis, in study order."""
    load_builtin()
    return sorted(_SPECS.values(), key=lambda s: (s.order, s.name))


def analysis_names() -> list[str]:
    return [s.name for s in analyses()]


def get_analysis(name: str) -> AnalysisSpec:
    """The spec named `name`; a clear error listing the choices otherwise."""
    load_builtin()
    if name not in _SPECS:
        raise UnknownNameError(
            f"unknown analysis {name!r}; choose from {', '.join(analysis_names())}"
        )
    return _SPECS[name]
