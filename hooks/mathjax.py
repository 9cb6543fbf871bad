"""mkdocs hook: ship MathJax with the site, so its math renders offline (no CDN).

MathJax 3 comes from the `django-static-mathjax` wheel on PyPI (the `docs` extra; plain static
files, Django is not needed). Its browser build `es5/` is added to the site under
`javascripts/mathjax/`: the `tex-mml-chtml.js` component that `mkdocs.yml` loads, and what it
loads on demand (TeX extensions, CHTML fonts, menu, accessibility), not the other components.
"""

import importlib.util
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

DEST = "javascripts/mathjax"
COMPONENT = "tex-mml-chtml.js"
# Parts of es5/ that tex-mml-chtml.js never loads.
SKIP_DIRS = {("output", "svg"), ("adaptors",)}


def _mathjax_dir() -> Path:
    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise PluginError(
            "MathJax is not installed: pip install -e '.[docs]' (django-static-mathjax)."
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax"
    if not (root / "es5" / COMPONENT).is_file():
        raise PluginError(
            f"{root / 'es5' / COMPONENT} is missing: reinstall django-static-mathjax."
        )
    return root


def _wanted(rel: Path) -> bool:
    parts = rel.parts
    if len(parts) == 1:  # top-level components: only the one mkdocs.yml loads
        return parts[0] == COMPONENT
    return not any(parts[: len(skip)] == skip for skip in SKIP_DIRS)


def on_files(files, config):
    root = _mathjax_dir()
    es5 = root / "es5"
    for path in sorted(es5.rglob("*")):
        rel = path.relative_to(es5)
        if path.is_file() and _wanted(rel):
            files.append(File.generated(config, f"{DEST}/{rel.as_posix()}", abs_src_path=str(path)))
    files.append(File.generated(config, f"{DEST}/LICENSE", abs_src_path=str(root / "LICENSE")))
    return files
