"""Test-wide settings.

- One intra-op thread, which keeps the many tiny tensor operations of the tests fast and their
  timings stable on a 2-core machine.
- The `slow` group: a test that builds a study, spawns a process (the `vitlens` command,
  torchrun, a Python subprocess) or drives Chromium is marked `slow` here, by one rule, so the
  default `python -m pytest` stays within minutes; `python -m pytest -m slow` runs the rest
  (CI runs both). A test can also carry `@pytest.mark.slow` itself.
- Every test has a time limit (pytest-timeout), so a hang fails in minutes: 300 s by default
  (pyproject.toml), 1200 s for the slow group.
"""

import inspect
import re

import pytest
import torch

torch.set_num_threads(1)

# Fixtures that build a whole study: any test using one is slow.
STUDY_FIXTURES = {"tiny_study", "sixteen", "buildup_folder"}
# What a test's own source (or a helper of its module) calls when it builds a study or a
# build-up search, spawns a process or drives a browser.
SPAWNS = re.compile(
    r"\bcli\(|\bsubprocess\.|\bPopen\(|\bos\.fork\(|\bmultiprocessing\b|\bwebdriver\b"
    r"|\btorchrun\b|\bStudy\.create\(|\bbuildup\("
)
SLOW_TIMEOUT = 1200


def _source(function) -> str:
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return ""


def _spawning_helpers(module) -> list[str]:
    """Names of the module's own functions that spawn a process (e.g. a `run` helper)."""
    return [
        name
        for name, f in vars(module).items()
        if inspect.isfunction(f)
        and f.__module__ == module.__name__
        and not name.startswith("test")
        and SPAWNS.search(_source(f))
    ]


def _is_slow(item: pytest.Item, helpers: list[str]) -> bool:
    if item.get_closest_marker("slow"):
        return True
    if STUDY_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    source = _source(getattr(item, "function", None))
    if SPAWNS.search(source):
        return True
    return any(re.search(rf"\b{re.escape(h)}\(", source) for h in helpers)


def pytest_collection_modifyitems(config, items):
    helpers: dict[str, list[str]] = {}
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and module.__name__ not in helpers:
            helpers[module.__name__] = _spawning_helpers(module)
        if _is_slow(item, helpers.get(getattr(module, "__name__", ""), [])):
            item.add_marker(pytest.mark.slow)
            if not item.get_closest_marker("timeout"):
                item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT))
