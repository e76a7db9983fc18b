"""Results of analyses (DESIGN.md §4): frozen dataclasses that round-trip through JSON.

Each analysis defines a subclass of `Result` with its numbers as fields (plain floats, ints,
strings, lists and dicts: nothing that needs torch to read) and a class-level `analysis` name and
`schema` version. `save` writes atomically; `load_result` reads any saved Result back into its own
class, so figures and reports can be drawn without models or data.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import platform
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from vitlens.atomic import write_json
from vitlens.errors import VitlensError

_REGISTRY: dict[str, type[Result]] = {}


@dataclass(frozen=True)
class Provenance:
    """Where a Result came from."""

    model: str = ""
    checkpoint_sha256: str | None = None
    dataset: str = ""
    split: str = ""
    seed: int | None = None
    device: str = "cpu"
    wall_seconds: float = 0.0
    vitlens: str = ""
    torch: str = ""
    created: str = ""
    host: str = ""

    @staticmethod
    def now(**kw: Any) -> Provenance:
        import torch

        from vitlens import __version__

        return Provenance(
            vitlens=__version__,
            torch=torch.__version__,
            created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            host=platform.node(),
            **kw,
        )


@dataclass(frozen=True)
class Result:
    """Base of every analysis result. Subclasses add their fields and set `analysis`."""

    analysis: ClassVar[str] = ""
    schema: ClassVar[int] = 1
    # For tables: which index of a list field runs over the blocks when it is not the first
    # (None: the field has no block axis, e.g. one entry per image).
    block_axes: ClassVar[dict[str, int | None]] = {}

    provenance: Provenance = field(default_factory=Provenance)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.analysis:
            _REGISTRY[cls.analysis] = cls

    def to_dict(self) -> dict[str, Any]:
        body = dataclasses.asdict(self)
        return {"analysis": self.analysis, "schema": self.schema, **body}

    def to_frame(self):
        """This Result as a tidy long-format pandas DataFrame (`vitlens.analysis.tables`)."""
        from vitlens.analysis.tables import to_frame

        return to_frame(self)

    def save(self, path: str | Path) -> Path:
        """Write as JSON to `path` atomically (temporary file, then rename)."""
        return write_json(path, self.to_dict(), indent=1)

    def plot(self, figure: str | None = None, ax=None):
        """This Result's figure, drawn by the report's own function: a matplotlib Figure, or,
        for a one-panel figure, drawn into the matplotlib Axes `ax` (which it returns)."""
        from vitlens.analysis.display import plot

        return plot(self, figure, ax)

    def _repr_html_(self) -> str:
        """Jupyter's display: a header, the key numbers and the figure, inlined."""
        from vitlens.analysis.display import result_html

        return result_html(self)


# -- Results that are not an analysis's ---------------------------------------------------------


@dataclass(frozen=True)
class BuildupResult(Result):
    """Every candidate of a build-up search (`vitlens.buildup`), kept here with the other Result
    classes so that reading one never imports a layer above the analyses.

    Attributes:
        base: the registered AlterNet configuration searched over.
        depths: blocks per stage.
        candidates: in training order, dicts with `msa` (MSA blocks per stage), `accuracy` and
            `nll` (on the validation split, which decided), `test_accuracy` and `test_nll`
            (reported only, measured after the search), `kept` (whether the search accepted
            it) and `run` (its run folder).
        best_msa: the accepted layout at the end of the search.
        best_accuracy: its validation accuracy.
        best_test_accuracy: its test accuracy (not used to choose it).
        decided_on: which split's accuracy decided ("validation").
        validation: how the validation split was carved (fraction, seed, sizes).
    """

    analysis: ClassVar[str] = "buildup"

    base: str = ""
    depths: list[int] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    best_msa: list[int] = field(default_factory=list)
    best_accuracy: float | None = None
    best_test_accuracy: float | None = None
    decided_on: str = "validation"
    validation: dict[str, Any] = field(default_factory=dict)


def result_class(name: Any) -> type[Result]:
    """The Result class of the analysis (or other result kind) `name`."""
    if name not in _REGISTRY:
        from vitlens.analysis.registry import load_builtin

        load_builtin()  # every analysis module defines its Result class
    if name not in _REGISTRY:
        raise VitlensError(f"unknown result kind {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def result_from_dict(data: dict[str, Any]) -> Result:
    """Rebuild a Result of the right class from `Result.to_dict()` output."""
    if not isinstance(data, dict):
        raise VitlensError(f"a Result is a JSON mapping, not a {type(data).__name__}")
    name = data.get("analysis")
    cls = result_class(name)
    if data.get("schema") != cls.schema:
        raise VitlensError(
            f"{name} result has schema {data.get('schema')}, this vitlens reads {cls.schema}"
        )
    body = {k: v for k, v in data.items() if k not in ("analysis", "schema")}
    provenance = body.get("provenance", {})
    known = {f.name for f in dataclasses.fields(Provenance)}
    if not isinstance(provenance, dict) or set(provenance) - known:
        extra = sorted(set(provenance) - known) if isinstance(provenance, dict) else provenance
        raise VitlensError(f"{name} result has a bad provenance ({extra!r:.80})")
    body["provenance"] = Provenance(**provenance)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(body) - names
    if unknown:
        raise VitlensError(f"{name} result has unknown fields {sorted(unknown)}")
    _check_shapes(cls, body, name)
    return cls(**body)


# What JSON can hold for each annotated type (tuples come back from JSON as lists).
_JSON_KINDS = {list: list, tuple: list, dict: dict, str: str, float: (int, float), int: int}


def _check_shapes(cls: type, body: dict[str, Any], name: str) -> None:
    """Each field holds the kind of JSON value its annotation says (a list, a mapping, a number,
    a string; None where optional), so a damaged file is refused here and not in a figure."""
    hints = typing.get_type_hints(cls)
    for key, value in body.items():
        allowed = _allowed(hints.get(key))
        if allowed is None or value is None and type(None) in allowed:
            continue
        if not isinstance(value, allowed) or isinstance(value, bool) and bool not in allowed:
            raise VitlensError(
                f"{name} result field {key!r} holds a {type(value).__name__}, not "
                f"{' or '.join(t.__name__ for t in allowed if t is not type(None))}"
            )


def _allowed(hint: Any) -> tuple[type, ...] | None:
    """The JSON types a field annotated `hint` may hold (None: not checked)."""
    options = (
        typing.get_args(hint)
        if typing.get_origin(hint) in (typing.Union, types.UnionType)
        else (hint,)
    )
    allowed: list[type] = []
    for option in options:
        if option is type(None):
            allowed.append(type(None))
            continue
        base = _JSON_KINDS.get(typing.get_origin(option) or option)
        if base is None:
            return None  # Any, a dataclass, a Literal: left to the Result itself
        allowed += list(base) if isinstance(base, tuple) else [base]
    if bool in (typing.get_args(hint) or (hint,)):
        allowed.append(bool)
    return tuple(allowed)


def load_result(path: str | Path) -> Result:
    """Read a saved Result; a clear VitlensError if it is missing or not a Result."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise VitlensError(f"no result at {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise VitlensError(f"{path} is not a JSON result: {err}") from None
    except RecursionError:
        raise VitlensError(f"{path} is nested too deeply to be a Result") from None
    try:
        return result_from_dict(data)
    except (VitlensError, TypeError) as err:  # TypeError: a field of the wrong kind
        raise VitlensError(f"{path} is not a readable Result: {err}") from None
