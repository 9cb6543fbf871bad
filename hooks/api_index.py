"""mkdocs hook: the API overview (`docs/api/index.md`) lists every name the API pages document.

The table is read off the pages at build time, in the order of the nav's "API reference"
section: one row per page section, naming each `::: scoresde.X` entry there (linked to it). A
name appended to a page therefore appears in the overview without editing it, and
`tests/test_docs.py` checks that every public name has an entry. An entry rendered without its
heading (`show_root_heading: false`, e.g. a namespace's docstring) is prose, not a name: it is
left out.

This module imports nothing from mkdocs, so the test can load it as a plain file.
"""

import re
from collections.abc import Iterable
from pathlib import Path

PAGE = "api/index.md"
MARKER = "<!-- api-index -->"
DIRECTIVE = re.compile(r"^:::\s*(scoresde(?:\.[A-Za-z_]\w*)+)\s*$")
HEADING = re.compile(r"^(#{2,3})\s+(.+?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def sections(text: str) -> list[tuple[str, list[str]]]:
    """`(heading, names)` for each section of a page that documents names, in page order.

    The heading is the nearest `##`/`###` heading above the entries ("" before the first one);
    fenced code blocks are skipped, and so are entries with `show_root_heading: false`.
    """
    out: list[tuple[str, list[str]]] = []
    heading, names = "", []
    lines = text.splitlines()
    in_fence = False
    for i, line in enumerate(lines):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        if match := HEADING.match(line):
            if names:
                out.append((heading, names))
            heading, names = match.group(2).replace("`", ""), []
        elif match := DIRECTIVE.match(line):
            options = []
            for follow in lines[i + 1 :]:
                if follow and not follow.startswith(" "):
                    break
                options.append(follow)
            if not re.search(r"show_root_heading:\s*false", "\n".join(options)):
                names.append(match.group(1))
    if names:
        out.append((heading, names))
    return out


def short(name: str) -> str:
    """`scoresde.VPSDE` -> `VPSDE`; `scoresde.guidance.DPS` -> `guidance.DPS`."""
    return name.removeprefix("scoresde.")


def table(pages: Iterable[tuple[str, str, str]]) -> str:
    """The overview table from `(title, link, markdown)` for each API page."""
    rows = ["| page | section | names |", "|---|---|---|"]
    for title, link, text in pages:
        for n, (heading, names) in enumerate(sections(text)):
            page = f"[{title}]({link})" if n == 0 else ""
            cell = ", ".join(f"[`{short(name)}`][{name}]" for name in names)
            rows.append(f"| {page} | {heading} | {cell} |")
    return "\n".join(rows)


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"docs/{PAGE} has no {MARKER} line to put the API table in.")
    siblings = page.parent.children if page.parent is not None else []
    pages = [
        (item.title, Path(item.file.src_uri).name, Path(item.file.abs_src_path).read_text())
        for item in siblings
        if item.is_page and item.file.src_uri != PAGE
    ]
    if not pages:
        raise ValueError(f"docs/{PAGE} has no sibling pages in the nav to list names from.")
    return markdown.replace(MARKER, table(pages))
