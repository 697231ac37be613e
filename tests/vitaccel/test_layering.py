"""Who may import whom (docs/architecture.md, "Layers"), read from the import statements of the
sources with ast, imports inside functions included: the spec layer (config, isa, numerics, files, memory)
imports no other layer; hw/ imports the spec layer and itself only; sw/ imports no layer above it,
and of hw/ only sw/perf.py reads the hardware's cycle formulas."""

import ast
import importlib.util
from pathlib import Path

import pytest

SPEC = ("vitaccel.config", "vitaccel.isa", "vitaccel.numerics", "vitaccel.files", "vitaccel.memory")
LAYERS = ("vitaccel.hw", "vitaccel.sw", "vitaccel.sim", "vitaccel.boards", "vitaccel.run", "vitaccel.jobs",
          "vitaccel.cli", "vitaccel.console", "vitaccel.demo")


def modules(package):
    """``(module name, source path)`` of every module of ``package``, its subpackages included."""
    root = Path(importlib.util.find_spec(package).origin).parent
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        yield ".".join((package, *parts[:-1], *([] if parts[-1] == "__init__" else parts[-1:]))), path


def imports(name, path):
    """``(line, target)`` of each module or name that module ``name`` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            yield node.lineno, base
            yield from ((node.lineno, f"{base}.{alias.name}") for alias in node.names)


def within(target, packages):
    return any(target == p or target.startswith(p + ".") for p in packages)


def violations(sources, forbidden, allowed=lambda name: False):
    return [f"{path}:{line} imports {target}" for name, path in sources if not allowed(name)
            for line, target in imports(name, path) if within(target, forbidden)]


@pytest.mark.parametrize("module", SPEC)
def test_spec_layer_imports_no_other_layer(module):
    assert violations([(module, Path(importlib.util.find_spec(module).origin))], LAYERS) == []


def test_hw_imports_only_the_spec_layer_and_itself():
    forbidden = tuple(layer for layer in LAYERS if layer != "vitaccel.hw")
    assert violations(modules("vitaccel.hw"), forbidden) == []


def test_sw_imports_nothing_above_it_and_only_perf_reads_hw():
    sources = list(modules("vitaccel.sw"))
    assert violations(sources, tuple(layer for layer in LAYERS if layer not in ("vitaccel.hw", "vitaccel.sw"))) == []
    assert violations(sources, ("vitaccel.hw",), allowed=lambda name: name == "vitaccel.sw.perf") == []
