"""Conventions of the package layout, checked by static analysis of ``src/pewm``.

Every ``.py`` file under ``src/pewm`` is parsed with :mod:`ast` (never imported) and its imports of
pewm modules are checked against the layer table ``LAYERS``: no upward or sideways imports, no
package import cycle, pewm imports at module top level (outside ``pewm.cli``), small files. The
rationale is in ``docs/design.md``, section "Architecture".
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

# The single source of truth: package (or top-level module) -> layer, lowest first. A module may
# import pewm modules of its own package or of a lower layer. A new top-level package is one line.
LAYERS = {
    "pewm": 0,  # the package __init__
    "pewm.atomic": 0,  # utility module: imports no other pewm module
    "pewm.outputs": 0,  # output-path checks (never overwrite a run silently): imports no other pewm module
    "pewm.geometry": 1,
    "pewm.video": 1,  # video panels and atomic mp4 writing: imports only pewm.atomic
    "pewm.data": 2,
    "pewm.memory": 2,
    "pewm.sim": 3,
    "pewm.model": 3,
    "pewm.train": 4,
    "pewm.assets": 4,
    "pewm.rollout": 4,
    "pewm.eval": 5,
    "pewm.planning": 5,
    "pewm.demo": 6,
    "pewm.play": 6,
    "pewm.cli": 7,
}
# The command line imports each command's library when the command runs (inside the command's
# function), so that `pewm --help` stays fast: it alone may import pewm modules lazily.
LAZY_IMPORTS_ALLOWED = {"pewm.cli"}
MAX_LINES = 500
SRC = Path(__file__).resolve().parents[1] / "src"

# Statements whose bodies still run when the module is imported (`if TYPE_CHECKING:`, `try:` ...).
_EAGER_BLOCKS = (ast.If, ast.Try, ast.ExceptHandler, ast.With, getattr(ast, "TryStar", ast.Try))


def module_name(path: Path, root: Path) -> str:
    """``root/pewm/sim/env.py`` -> ``pewm.sim.env``; ``root/pewm/__init__.py`` -> ``pewm``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str:
    """The layer-table entry a module belongs to: ``pewm.sim.env`` -> ``pewm.sim``."""
    return ".".join(module.split(".")[:2])


def _is_module(name: str, root: Path) -> bool:
    path = root.joinpath(*name.split("."))
    return path.is_dir() or path.with_suffix(".py").is_file()


def imports_of(path: Path, root: Path) -> list[tuple[int, str, bool]]:
    """``(line, imported pewm module, is_top_level)`` for every pewm import in ``path``.

    Relative imports are resolved; ``from pewm import sim`` yields ``pewm.sim`` when ``sim`` is a
    module of the tree under ``root``. Top level means the module body, possibly inside ``if``,
    ``try`` or ``with`` blocks, but not inside a function or class.
    """
    me = module_name(path, root)
    is_pkg = path.name == "__init__.py"
    found: list[tuple[int, str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((child.lineno, a.name, top) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: resolve against the importing module's package
                    anchor = me.split(".")[: len(me.split(".")) - child.level + is_pkg]
                    base = ".".join(anchor + ([base] if base else []))
                for a in child.names:
                    sub = f"{base}.{a.name}"
                    found.append((child.lineno, sub if _is_module(sub, root) else base, top))
            else:
                visit(child, top and isinstance(child, _EAGER_BLOCKS))

    visit(ast.parse(path.read_text(), filename=str(path)), True)
    unique = dict.fromkeys(found)  # `from pewm.x import a, b` is one import of pewm.x
    return [(n, m, t) for n, m, t in unique if m == "pewm" or m.startswith("pewm.")]


def all_imports(root: Path) -> list[tuple[str, str, int, str, bool]]:
    """``(file, importer module, line, imported module, is_top_level)`` over ``root/pewm``."""
    return [(p.relative_to(root.parent).as_posix(), module_name(p, root), n, m, top)
            for p in sorted((root / "pewm").rglob("*.py")) for n, m, top in imports_of(p, root)]


def unknown_modules(root: Path) -> list[str]:
    """Modules under ``root/pewm`` whose package is missing from ``LAYERS``."""
    modules = sorted({module_name(p, root) for p in (root / "pewm").rglob("*.py")})
    return [f"{m}: package {package_of(m)} is not in the LAYERS table of tests/test_architecture.py"
            " - add it there with its layer" for m in modules if package_of(m) not in LAYERS]


def layer_violations(root: Path) -> list[str]:
    """Imports that go up a layer, sideways within a layer, or to a package not in the table."""
    out = []
    for where, me, line, target, _ in all_imports(root):
        src, dst = package_of(me), package_of(target)
        if src == dst:
            continue
        if src not in LAYERS or dst not in LAYERS:
            missing = src if src not in LAYERS else dst
            out.append(f"{where}:{line} imports {target}: {missing} is not in the LAYERS table"
                       " - add it there with its layer")
        elif LAYERS[dst] >= LAYERS[src]:
            rule = "upward import" if LAYERS[dst] > LAYERS[src] else "sideways import (same layer)"
            out.append(f"{where}:{line} imports {target}: {rule}, {src} (layer {LAYERS[src]}) "
                       f"may not import {dst} (layer {LAYERS[dst]})")
    return out


def import_cycles(root: Path) -> list[str]:
    """Cycles of the package graph (one per back edge of a depth-first search), with file:line."""
    edges: dict[str, dict[str, str]] = {}
    for where, me, line, target, _ in all_imports(root):
        src, dst = package_of(me), package_of(target)
        if src != dst:
            edges.setdefault(src, {}).setdefault(dst, f"{where}:{line} imports {target}")
    cycles, state = [], {}  # state: 1 = on the current path, 2 = done

    def dfs(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                dfs(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            dfs(node, [])
    return [f"cycle {' -> '.join(c)}: " + "; ".join(edges[a][b] for a, b in zip(c, c[1:]))
            for c in cycles]


def lazy_pewm_imports(root: Path) -> list[str]:
    """pewm imports inside functions or classes, outside ``LAZY_IMPORTS_ALLOWED``."""
    return [
        f"{where}:{line} imports {target} inside a function or class"
        for where, me, line, target, top in all_imports(root)
        if not top and package_of(me) not in LAZY_IMPORTS_ALLOWED
    ]


def oversized_files(root: Path) -> list[str]:
    counts = {p: len(p.read_text().splitlines()) for p in sorted((root / "pewm").rglob("*.py"))}
    return [f"{p.relative_to(root.parent).as_posix()}: {n} lines"
            for p, n in counts.items() if n > MAX_LINES]


def _fail(problems: list[str], what: str) -> None:
    if problems:
        pytest.fail(f"{len(problems)} {what}:\n" + "\n".join(problems), pytrace=False)


def test_every_package_is_in_the_layer_table():
    _fail(unknown_modules(SRC), "modules outside the layer table")


def test_no_upward_or_sideways_imports():
    _fail(layer_violations(SRC), "imports breaking the layer order")


def test_no_import_cycles_between_packages():
    _fail(import_cycles(SRC), "package import cycles")


def test_pewm_imports_at_module_top_level():
    _fail(lazy_pewm_imports(SRC), "function-level pewm imports (pewm modules must be imported at"
          " module top level; only pewm.cli may import them lazily)")


def test_source_files_stay_small():
    _fail(oversized_files(SRC), f"source files over {MAX_LINES} lines")


def test_checker_reports_synthetic_violations(tmp_path):
    files = {
        "pewm/__init__.py": "",
        "pewm/geometry/__init__.py": "from pewm.sim import env\n",  # upward: 1 -> 3
        "pewm/data/__init__.py": "from ..memory import x\n",  # sideways + cycle (relative)
        "pewm/memory/__init__.py": "import pewm.data.io\n",  # sideways + cycle
        "pewm/sim/__init__.py": "try:\n    import pewm.data\nexcept ImportError:\n    pass\n",
        "pewm/sim/env.py": "import numpy\ndef f():\n    import scipy\n    from pewm import model\n",
        "pewm/model/__init__.py": "",
        "pewm/cli/__init__.py": "def main():\n    import pewm.sim.env\n",  # allowed: cli
        "pewm/newpkg.py": "import pewm.geometry\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "pewm/big.py").write_text("x = 1\n" * (MAX_LINES + 1))
    root = tmp_path

    assert imports_of(root / "pewm/sim/env.py", root) == [(4, "pewm.model", False)]
    assert imports_of(root / "pewm/data/__init__.py", root) == [(1, "pewm.memory", True)]
    layers = layer_violations(root)
    assert any("pewm/geometry/__init__.py:1 imports pewm.sim.env: upward" in v for v in layers)
    assert any("pewm/data/__init__.py:1 imports pewm.memory: sideways" in v for v in layers)
    assert any("pewm/sim/env.py:4 imports pewm.model: sideways" in v for v in layers)
    assert any("pewm.newpkg is not in the LAYERS table" in v for v in layers)
    assert len(layers) == 5, layers
    assert [m.split(":")[0] for m in unknown_modules(root)] == ["pewm.big", "pewm.newpkg"]
    cycles = import_cycles(root)
    assert len(cycles) == 1 and "pewm.data -> pewm.memory -> pewm.data:" in cycles[0], cycles
    lazy = lazy_pewm_imports(root)
    assert len(lazy) == 1 and lazy[0].startswith(f"{tmp_path.name}/pewm/sim/env.py:4"), lazy
    assert oversized_files(root) == [f"{tmp_path.name}/pewm/big.py: {MAX_LINES + 1} lines"]
