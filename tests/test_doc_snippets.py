"""Every ```python block of README.md and docs/**/*.md runs, one test per block (id `file:line`).

Conventions for the documentation's code blocks:

- The blocks of one page run in order in ONE namespace, so a page can build on its earlier blocks
  (a test that runs alone first runs the blocks before it on its page).
- Every figure a page shows as a block's result is checked. A block is a script (copyable as it
  is) whose figures are checked by an `assert` in the block, or whose printed output is shown in
  the ```text block that follows it, marked `<!-- snippet: output -->`: the block's stdout must
  match that text (doctest's `ELLIPSIS` and `NORMALIZE_WHITESPACE` rules: `...` matches anything).
  A block containing `>>>` prompts runs as a doctest instead (same rules).
- A marker comment on the nearest non-blank line before the opening fence (invisible on the site):
  `<!-- snippet: fragment -->` for a deliberate fragment (not run: the ONLY way to skip a block);
  `<!-- snippet: slow -->` for a long block, marked `slow` (run with `pytest -m slow`) together
  with every later block of its page, which may build on it; `<!-- snippet: output -->` before a
  ```text block, as above.
- The default run executes every page's blocks except those of `SLOW_PAGES` (the likelihood
  how-to), which are marked `slow` with the page.
- Each page runs in a process of its own (`tests/doc_worker.py`), with the user's XLA settings
  rather than the test suite's (the printed figures are what a reader gets), so the global JAX
  settings a page changes (e.g. `jax_enable_x64`) stay with that page.

The blocks are extracted with `mktestdocs.grab_code_blocks`; fences, line numbers and markers are
read alongside it and checked against it.
"""

import doctest
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mktestdocs import grab_code_blocks

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# Pages whose blocks are all `slow`: the likelihood how-to solves its problems to print their
# figures (24 s on a quiet 2-core machine, the longest page by far).
SLOW_PAGES = {ROOT / "docs/how-to/likelihood.md"}
FENCE = re.compile(r"^```(\S*)\s*$")
MARKER = re.compile(r"^<!--\s*snippet:\s*(\w+)\s*-->$")
MARKERS = {"fragment", "slow", "output"}
DOCTEST_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


class Block:
    def __init__(self, page: Path, line: int, code: str, marker: str | None):
        self.page, self.line, self.code, self.marker = page, line, code, marker
        self.output: str | None = None  # the shown output (a marked ```text block after it)
        self.id = f"{page.relative_to(ROOT).as_posix()}:{line}"


def page_blocks(page: Path) -> list[Block]:
    """The ```python blocks of `page` in order, with their opening line and marker."""
    lines = page.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```")
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(before)
        marker = marker.group(1) if marker else None
        if marker is not None and marker not in MARKERS:
            raise ValueError(f"{page}:{i + 1}: unknown snippet marker {marker!r}")
        code = "\n".join(lines[i + 1 : end]) + "\n"
        if marker == "output":
            if fence.group(1) != "text" or not blocks or blocks[-1].output is not None:
                raise ValueError(f"{page}:{i + 1}: an output must be a ```text block after code")
            blocks[-1].output = code
        elif fence.group(1) == "python":
            blocks.append(Block(page, i + 1, code, marker))
        i = end + 1
    # The same blocks as mktestdocs sees them (it is what a reader's `check_md_file` would run).
    assert [b.code for b in blocks] == grab_code_blocks(page.read_text(), lang="python"), page
    return blocks


BLOCKS = {page: page_blocks(page) for page in PAGES}


def _params():
    for page, blocks in BLOCKS.items():
        slow = page in SLOW_PAGES
        for block in blocks:
            slow = slow or block.marker == "slow"
            marks = [pytest.mark.xdist_group(block.page.name)]  # one worker per page, in order
            if slow:
                marks.append(pytest.mark.slow)
            if block.marker == "fragment":
                marks.append(pytest.mark.skip(reason="marked <!-- snippet: fragment -->"))
            yield pytest.param(block, id=block.id, marks=marks)


# Per page: its worker process, how many of its blocks have run, and the first that failed.
_STATE: dict[Path, dict] = {}
_WORKDIRS: dict[Path, Path] = {}


def _worker(workdir: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env["XLA_FLAGS"] = env.pop("SCORESDE_USER_XLA_FLAGS", "")  # set aside by conftest.py
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("doc_worker.py"))],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=workdir, env=env,
    )  # fmt: skip


def _run(block: Block, worker: subprocess.Popen) -> None:
    request = dict(id=block.id, code=block.code, page=str(block.page), line=block.line)
    assert worker.stdin is not None and worker.stdout is not None
    worker.stdin.write(json.dumps(request) + "\n")
    worker.stdin.flush()
    answer = worker.stdout.readline()
    if not answer:
        pytest.fail(f"{block.id}: the page's process died (exit status {worker.wait()})")
    result = json.loads(answer)
    sys.stdout.write(result["stdout"])
    assert result["error"] is None, f"{block.id} failed:\n{result['error']}"
    if block.output is not None:
        checker = doctest.OutputChecker()
        assert checker.check_output(block.output, result["stdout"], DOCTEST_FLAGS), (
            f"{block.id} printed\n{result['stdout']}but the page shows\n{block.output}"
        )


def _run_in_page(block: Block, workdir: Path) -> None:
    blocks = BLOCKS[block.page]
    index = blocks.index(block)
    state = _STATE.get(block.page)
    if state is None or index < state["done"]:  # first block run, or a rerun of the page
        if state is not None:
            state["worker"].kill()
        state = _STATE[block.page] = {"worker": _worker(workdir), "done": 0, "failed": None}
    for earlier in blocks[state["done"] : index + 1]:
        if state["failed"] is not None:
            pytest.fail(f"an earlier block of this page failed: {state['failed']}")
        state["done"] += 1
        if earlier.marker == "fragment":
            continue
        try:
            _run(earlier, state["worker"])
        except BaseException:
            state["failed"] = earlier.id
            raise
    if state["done"] == len(blocks):
        state["worker"].stdin.close()
        state["worker"].wait()


def test_blocks_are_found():
    assert SLOW_PAGES <= set(BLOCKS), SLOW_PAGES - set(BLOCKS)
    ids = [b.id for blocks in BLOCKS.values() for b in blocks]
    assert "README.md" in {b.page.name for blocks in BLOCKS.values() for b in blocks}
    assert len(ids) >= 20 and len(set(ids)) == len(ids)
    fragments = [b.id for blocks in BLOCKS.values() for b in blocks if b.marker == "fragment"]
    # A fragment is never run: kept for what cannot run offline (a downloaded diffusers
    # checkpoint) or is deliberately partial. Each new one must be justified here.
    assert len(fragments) <= 4, f"too many fragments: {fragments}"


@pytest.mark.parametrize("block", list(_params()))
def test_block(block, tmp_path_factory):
    workdir = _WORKDIRS.get(block.page)
    if workdir is None:
        workdir = _WORKDIRS[block.page] = tmp_path_factory.mktemp(block.page.stem)
    _run_in_page(block, workdir)
