"""The documentation site: every public name is in the API reference and its overview, the
pages name no private module, and the strict build passes.

The coverage tests are pure text (they parse `scoresde/__init__.py` and the public namespaces
with `ast`, import nothing from scoresde); the build test runs `mkdocs build --strict` and is
marked slow.
"""

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "scoresde"
DOCS = ROOT / "docs"
API_DIR = DOCS / "api"
DIRECTIVE = re.compile(r"^:::\s*(scoresde(?:\.[A-Za-z_]\w*)+)\s*$", re.MULTILINE)


def _submodule_all(name: str) -> list[str]:
    """The literal `__all__` of `scoresde/<name>.py`."""
    tree = ast.parse((PACKAGE / f"{name}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise AssertionError(f"scoresde/{name}.py has no literal __all__")


def public_names() -> set[str]:
    """Dotted names that the API reference must document.

    Every non-underscore name bound by an import in `scoresde/__init__.py` (`scoresde.X`); a
    public submodule imported there (`from . import analytic`) stands for its `__all__`
    (`scoresde.analytic.X`) instead of itself.
    """
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    names = set()
    for node in tree.body:
        if not isinstance(node, ast.ImportFrom):
            continue
        for alias in node.names:
            bound = alias.asname or alias.name
            if bound.startswith("_"):
                continue
            if node.level == 1 and node.module is None:  # `from . import analytic`
                names.update(f"scoresde.{bound}.{n}" for n in _submodule_all(alias.name))
            else:
                names.add(f"scoresde.{bound}")
    # A namespace that only re-exports (`ss.langevin.MALA` is `ss.MALA`) is documented once, under
    # the flat name; so is a namespace re-exported by another (`ss.inverse.guidance`).
    faces = {n.split(".")[1] for n in names if n.count(".") == 2}
    return {
        n
        for n in names
        if not (n.count(".") == 2 and f"scoresde.{n.split('.')[2]}" in names)
        and not (n.count(".") == 2 and n.split(".")[2] in faces)
    }


def documented_names() -> set[str]:
    return {
        m.group(1) for page in API_DIR.glob("*.md") for m in DIRECTIVE.finditer(page.read_text())
    }


def test_public_names_are_found():
    names = public_names()
    # A few names the contract (API.md) guarantees: the parser must see them.
    for name in ("VPSDE", "sample_ode", "log_likelihood", "analytic.GaussianMixture"):
        assert f"scoresde.{name}" in names
    assert "scoresde.analytic" not in names
    assert not any(n.split(".")[-1].startswith("_") for n in names)


def test_every_public_name_is_in_the_api_reference():
    missing = sorted(public_names() - documented_names())
    assert not missing, "public names without a `::: <name>` entry in docs/api/*.md: " + ", ".join(
        missing
    )


def public_namespaces() -> set[str]:
    """The submodules `scoresde/__init__.py` imports as namespaces (`from . import analytic`)."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    return {
        alias.asname or alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module is None
        for alias in node.names
    }


def test_api_reference_names_exist():
    """Every `::: scoresde.X` entry is a public name or a public namespace (no stale entries, no
    private module: moving a file must break no page)."""
    allowed = public_names() | {f"scoresde.{n}" for n in public_namespaces()}
    stale = sorted(d for d in documented_names() if d not in allowed)
    assert not stale, (
        "docs/api/*.md documents names that are not public (document the public name, and move "
        "a private module's prose into the page): " + ", ".join(stale)
    )


def test_docs_name_no_private_module():
    """No `:::` entry and no cross-reference in any page points into a private module."""

    def private(target: str) -> bool:
        parts = target.strip().split(".")
        return parts[0] == "scoresde" and any(part.startswith("_") for part in parts[1:])

    bad = []
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text()
        where = page.relative_to(ROOT).as_posix()
        for m in re.finditer(r"^:::\s*(\S+)", text, re.MULTILINE):
            if private(m.group(1)):
                bad.append(f"{where}: ::: {m.group(1)}")
        # [text][scoresde._x.y] and [`scoresde._x.y`][]
        for m in re.finditer(r"\]\[([^\]]+)\]|\[`?([^\]`]+)`?\]\[\]", text):
            target = m.group(1) or m.group(2)
            if private(target):
                bad.append(f"{where}: [...][{target}]")
    assert not bad, "pages point into private modules:\n" + "\n".join(bad)


def _api_index_hook():
    spec = importlib.util.spec_from_file_location("api_index", ROOT / "hooks" / "api_index.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_index_lists_every_public_name():
    """The overview table that hooks/api_index.py builds names (and links) every public name."""
    hook = _api_index_hook()
    index = (API_DIR / "index.md").read_text()
    assert index.count(hook.MARKER) == 1, f"docs/api/index.md needs one {hook.MARKER} line"
    assert re.search(
        r"^hooks:(\n\s+-\s+\S+)*\n\s+-\s+hooks/api_index\.py\s*$",
        (ROOT / "mkdocs.yml").read_text(),
        re.MULTILINE,
    )
    pages = [
        (p.stem, p.name, p.read_text()) for p in sorted(API_DIR.glob("*.md")) if p.stem != "index"
    ]
    table = hook.table(pages)
    listed = set(re.findall(r"\]\[(scoresde(?:\.\w+)+)\]", table))
    missing = sorted(public_names() - listed)
    assert not missing, "public names missing from the API overview: " + ", ".join(missing)


def test_api_index_names_every_namespace():
    """The overview's Namespaces section names each public namespace as `ss.<name>`."""
    index = (API_DIR / "index.md").read_text()
    section = index.split("## Namespaces", 1)[-1]
    missing = sorted(n for n in public_namespaces() if f"`ss.{n}`" not in section)
    assert "## Namespaces" in index and not missing, (
        "docs/api/index.md's Namespaces section does not name: " + ", ".join(missing)
    )


def test_every_page_is_in_the_nav():
    """mkdocs only reports pages missing from `nav` as INFO; make it an error."""
    nav = set(re.findall(r":\s*(\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.MULTILINE))
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert pages == nav, f"not in nav: {sorted(pages - nav)}; missing files: {sorted(nav - pages)}"


def test_command_tables_name_every_command():
    """Getting started and the command-line page each have a row for every `scoresde` command
    (a module of `scoresde/_cli/` with an `add_parser`)."""
    commands = sorted(p.stem for p in (PACKAGE / "_cli").glob("*.py")
                      if "\ndef add_parser(" in p.read_text())  # fmt: skip
    assert {"train", "sample", "inpaint", "nll", "bench"} <= set(commands)
    for page in ("getting-started.md", "command-line.md"):
        text = (DOCS / page).read_text()
        missing = [c for c in commands if f"| `scoresde {c}" not in text]
        assert not missing, f"docs/{page}'s command table lacks: {', '.join(missing)}"


def test_math_renderer_ships_with_the_site():
    """No script from the network: MathJax is copied in by hooks/mathjax.py (offline readers)."""
    config = (ROOT / "mkdocs.yml").read_text()
    assert not re.search(r"https?://\S+\.js", config), "mkdocs.yml loads a script from the web"
    assert re.search(r"^hooks:\s*\n\s*-\s*hooks/mathjax\.py\s*$", config, re.MULTILINE)
    assert re.search(r"^\s*-\s*javascripts/mathjax/tex-mml-chtml\.js\s*$", config, re.MULTILINE)
    assert (ROOT / "hooks" / "mathjax.py").is_file()


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    # The running interpreter's mkdocs (a venv need not be activated, so not `shutil.which`).
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    site = tmp_path / "site"
    assert (site / "api" / "sampling" / "index.html").exists()
    # The math renderer is part of the site, with its fonts, and no page loads it from a CDN.
    assert (site / "javascripts" / "mathjax" / "tex-mml-chtml.js").is_file()
    assert list((site / "javascripts" / "mathjax" / "output" / "chtml" / "fonts").rglob("*.woff"))
    for page in site.rglob("*.html"):
        scripts = re.findall(r'<script[^>]*src="([^"]+)"', page.read_text())
        assert not [src for src in scripts if "://" in src], (page, scripts)
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("WARNING")]
    assert not warnings, "\n".join(warnings)
