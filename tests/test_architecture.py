"""The import graph of `src/vitlens` against the layer order written in docs/ARCHITECTURE.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "vitlens"


def layer_order() -> dict[str, int]:
    """Top-level unit (module or subpackage) -> its layer, read from the map's fenced list."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    block = re.search(r"<!-- layers -->\n```\n(.*?)```", text, re.S)
    assert block, "docs/ARCHITECTURE.md lost its <!-- layers --> list"
    return {
        unit: depth
        for depth, line in enumerate(block.group(1).splitlines())
        for unit in line.split()
    }


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every vitlens module `path` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "vitlens":
                found.update(f"vitlens.{a.name}" for a in node.names)
            elif node.module.startswith("vitlens."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("vitlens."))
    return found


def unit_of(module: str) -> str:
    return module.split(".")[1]


def sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py")


def test_every_unit_has_a_layer():
    layers = layer_order()
    units = {unit_of(module_name(p)) for p in sources()}
    assert units <= set(layers), f"not in docs/ARCHITECTURE.md's layers: {units - set(layers)}"


def test_no_import_runs_back_up_the_layers():
    layers = layer_order()
    upward = []
    for path in sources():
        here = unit_of(module_name(path))
        for target in imports_of(path):
            there = unit_of(target)
            if there == "__version__":  # the package's version string, set at the root
                continue
            if layers.get(there, -1) > layers[here]:
                upward.append(f"{module_name(path)} -> {target}")
    assert not upward, "imports that run back up the layers:\n" + "\n".join(upward)


def test_analyses_do_not_import_each_other():
    analysis = PACKAGE / "analysis"
    registers = {
        module_name(p)
        for p in analysis.glob("*.py")
        if "SPEC = register_analysis(" in p.read_text()
    }
    registers.discard("vitlens.analysis.registry")
    crossing = [
        f"{module_name(p)} -> {t}"
        for p in analysis.glob("*.py")
        if module_name(p) in registers
        for t in imports_of(p)
        if t in registers and t != module_name(p)
    ]
    assert not crossing, "an analysis imports another analysis:\n" + "\n".join(crossing)


def test_the_checker_sees_function_level_imports(tmp_path):
    # The three back-imports this test was written to stop were all inside functions.
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from vitlens.study import StudyPlan\n    import vitlens.cli\n")
    assert imports_of(source) == {"vitlens.study", "vitlens.cli"}
