"""Analysis options validated from their declarations (issue 22, point 1).

Every option of every registered analysis declares its type and range; `--set` and the library
entry (`run_analysis`, which the study uses too) check against it before anything runs. A
property-based test draws values of every wrong kind for every declared option and asserts a
one-line VitlensError naming the option; through the command it asserts status 2, no traceback
and nothing written.
"""

from __future__ import annotations

import hashlib
import math
import sys
import traceback
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vitlens.analysis.registry import analyses, get_analysis
from vitlens.analysis.runner import parse_options
from vitlens.analysis.spec import Option, check_options
from vitlens.errors import VitlensError

OPTIONS = [(spec.name, o.name) for spec in analyses() for o in spec.options]


def test_every_option_is_typed_and_its_default_passes():
    for spec in analyses():
        for o in spec.options:
            assert o.kind != "any", f"{spec.name}.{o.name} declares no type"
            o.check(o.default, spec.name)


def _wrong_values(option: Option) -> st.SearchStrategy:
    """Values `option` must refuse."""
    texts = st.text(min_size=1, max_size=8).filter(
        lambda t: t not in option.choices and t.strip() not in ("true", "false")
    )
    bad = [st.just(float("nan")), st.just(float("inf")), st.just([])]
    if option.kind in ("int", "float"):
        bad.append(texts.filter(lambda t: not _is_number(t)))
        bad.append(st.just(True))
        if option.minimum is not None:
            bad.append(st.floats(-1e12, option.minimum, exclude_max=True).map(_as_kind(option)))
        if option.maximum is not None:
            bad.append(st.integers(int(option.maximum) + 1, 10**15).map(_as_kind(option)))
        if option.positive:
            bad.append(st.sampled_from([0, -1, -0.5]).map(_as_kind(option)))
        if option.kind == "int":
            bad.append(st.sampled_from([2.5, 0.1, -3.7]))
    elif option.kind == "bool":
        bad += [st.integers(2, 9), texts]
    else:  # str and choice
        bad += [st.integers(-5, 5), st.floats(allow_nan=False, allow_infinity=False)]
        if option.choices:
            bad.append(texts)
    return st.one_of(bad)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _as_kind(option: Option):
    return (lambda v: int(math.floor(v))) if option.kind == "int" else float


@pytest.mark.parametrize("analysis, name", OPTIONS)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_wrong_values_are_refused_naming_the_option(analysis, name, data):
    spec = get_analysis(analysis)
    option = next(o for o in spec.options if o.name == name)
    value = data.draw(_wrong_values(option))
    if option.many and isinstance(value, list) and value:
        value = [value[0]]
    with pytest.raises(VitlensError, match=rf"{name}=") as caught:
        check_options(spec, {name: value})
    assert "\n" not in str(caught.value)


def test_the_command_lines_values_are_typed_and_lists_take_one_item():
    fourier, corruptions = get_analysis("fourier"), get_analysis("corruptions")
    assert parse_options(fourier, ["eps=1e-3"]) == {"eps": 0.001}
    assert parse_options(corruptions, ["corruptions=fog"]) == {"corruptions": ["fog"]}
    assert parse_options(corruptions, ["severities=3"]) == {"severities": [3]}
    lesion = get_analysis("lesion")
    assert parse_options(lesion, ["blocks=stage0.block0.conv"]) == {
        "blocks": ["stage0.block0.conv"]
    }
    for spec, pair, message in [
        (fourier, "eps=abc", "eps='abc': must be a number, above 0"),
        (fourier, "eps=1e308", "at most 1000"),
        (get_analysis("freqnoise"), "eps=0.1,abc", "eps='abc'"),
        (get_analysis("hessian"), "k=0", "k=0: must be a whole number, at least 1"),
        (get_analysis("hessian"), "k=2.5", "k=2.5"),
        (get_analysis("hessian"), "k=100000000", "at most 200"),
        (get_analysis("landscape"), "steps=NaN", "steps=nan"),
        (get_analysis("landscape"), "steps=1000000", "at most 201"),
        (corruptions, "severities=9", "severities=9"),
        (corruptions, "severities=-1", "at least 1"),
        (get_analysis("hessian"), "tol=-1", "above 0"),
        (get_analysis("landscape"), "span=-0.5", "above 0"),
    ]:
        with pytest.raises(VitlensError, match=message.replace("(", r"\(")):
            parse_options(spec, [pair])


def _run_cli(args: list[str], capsys) -> tuple[int, str]:
    from vitlens.cli import main

    saved, sys.argv = sys.argv, ["vitlens", *map(str, args)]
    code = 0
    try:
        main()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    except BaseException:  # noqa: BLE001 - what a user would see
        sys.stderr.write(traceback.format_exc())
        code = 1
    finally:
        sys.argv = saved
    captured = capsys.readouterr()
    return code, captured.err + captured.out


def _digest(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*")
            if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module")
def a_run(tmp_path_factory):
    from vitlens.config import make_config
    from vitlens.train import Trainer

    out = tmp_path_factory.mktemp("run") / "vit"
    Trainer(make_config("quick", model="vit_nano", epochs=1, fraction=0.01), out, quiet=True).run()
    return out


@pytest.mark.parametrize("analysis, name", OPTIONS)
def test_the_command_refuses_a_wrong_value_with_status_2_and_writes_nothing(
    analysis, name, a_run, tmp_path, capsys
):
    option = next(o for o in get_analysis(analysis).options if o.name == name)
    wrong = "abc" if option.kind in ("int", "float", "bool") else "1e999"
    before = _digest(a_run)
    out = tmp_path / "out"
    args = ["analyze", analysis, a_run, "--out", out, "--set", f"{name}={wrong}"]
    code, text = _run_cli(args, capsys)
    assert code == 2, text
    assert "Traceback" not in text and f"{name}=" in text
    assert not out.exists() and _digest(a_run) == before
