"""The package's shape: no import circles (function-level imports included), nothing inside the
package imports the package root, no module over 600 lines.

Pure text: the imports are read with `ast`, nothing is imported or run.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "scoresde"
MAX_LINES = 600


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path) -> tuple[dict[str, set[str]], list[str]]:
    """Edges module -> module for every relative import anywhere in a file (functions too), and
    the places that import a name from the package root itself."""
    files = {module_name(p, package): p for p in package.rglob("*.py")}
    root = package.name
    edges: dict[str, set[str]] = {m: set() for m in files}
    root_imports = []
    for mod, path in files.items():
        is_init = path.name == "__init__.py"
        here = mod.split(".") if is_init else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module.split(".")[0] == root:
                    root_imports.append(f"{mod}: absolute import of {node.module}")
                continue
            if not isinstance(node, ast.ImportFrom):
                continue
            base = here[: len(here) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            targets = []
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in files:
                    targets.append(sub)  # `from . import module`
                elif target == root:
                    root_imports.append(f"{mod}: imports {alias.name!r} from the package root")
                else:
                    targets.append(target)
            for t in targets:
                # Importing a.b.c runs the __init__ of every package on the way, except the
                # packages that hold the importing module (already running) and the root (it
                # only re-exports; checked above).
                parts = t.split(".")
                for k in range(2, len(parts) + 1):
                    dep = ".".join(parts[:k])
                    inside = mod == dep or mod.startswith(dep + ".")
                    if dep in files and (not inside or dep == t):
                        edges[mod].add(dep)
    return edges, root_imports


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_detector_finds_a_function_level_circle_and_a_root_import(tmp_path):
    """Negative control: a circle closed by an import inside a function, and an import of the
    package root, are both reported; the same package without them is clean."""
    pkg = _write(
        tmp_path,
        {
            "pkg/__init__.py": "from .a import f as f\n",
            "pkg/a.py": "from .sub.b import g\n\ndef f():\n    return g()\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/b.py": "def g():\n    from ..a import f\n    return f\n",
            "pkg/c.py": "def h():\n    from . import __version__\n",
        },
    )
    edges, root_imports = import_graph(pkg)
    assert cycles(edges) == [["pkg.a", "pkg.sub.b"]]
    assert root_imports == ["pkg.c: imports '__version__' from the package root"]
    (pkg / "sub" / "b.py").write_text("def g():\n    return 1\n")
    (pkg / "c.py").write_text("from .sub import b\n")
    edges, root_imports = import_graph(pkg)
    assert cycles(edges) == [] and root_imports == []


def test_no_import_circles():
    edges, _ = import_graph(PACKAGE)
    found = cycles(edges)
    assert not found, "import circles (move the misplaced definition): " + "; ".join(
        " <-> ".join(c) for c in found
    )


def test_nothing_imports_the_package_root():
    _, root_imports = import_graph(PACKAGE)
    assert not root_imports, "; ".join(root_imports)


@pytest.mark.parametrize("limit", [MAX_LINES])
def test_no_module_over_600_lines(limit):
    sizes = {p: len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert max(sizes.values()) > 50  # the walk found the package
    over = sorted(f"{p.relative_to(PACKAGE)} ({n})" for p, n in sizes.items() if n > limit)
    assert not over, f"modules over {limit} lines (split by concept): " + ", ".join(over)


def test_slow_by_time_names_existing_tests():
    """Every id in tests/slow_by_time.txt names a test function that exists in its file (a
    renamed test would otherwise silently return to the default run)."""
    from conftest import slow_by_time

    ids = slow_by_time()
    assert ids and len(ids) == len(set(ids))
    tests = Path(__file__).parent
    for nodeid in ids:
        path, name = nodeid.split("::")
        function = name.split("[")[0]
        source = (tests.parent / path).read_text()
        assert f"def {function}(" in source, f"tests/slow_by_time.txt: {nodeid} is not a test"
