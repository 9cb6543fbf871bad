"""Every script in `examples/` runs end to end in its smoke mode (`--smoke`: tiny sizes, the real
code path) and writes its outputs to `--out`.

Each runs as a subprocess, as a user would run it. Compilation dominates these runs, so they
set `JAX_DISABLE_MOST_OPTIMIZATIONS=1` (JAX's own switch: less XLA optimisation, much faster
compiles; the same programs and results up to rounding).

Each takes 20 s to over a minute of CPU even in smoke mode (compilation), so all are marked
`slow`; `.ci/run` runs them after the default suite. The examples' statistical claims are checked
in the default suite where they are cheap (e.g. `test_langevin.py::test_example_annealed_langevin`).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

OUTPUTS = {
    "train_toy2d.py": ["toy2d_samples.png", "toy2d_checkpoint.eqx", "toy2d_checkpoint.eqx.json"],
    "train_digits.py": [
        "digits_samples.png",
        "digits_checkpoint.eqx",
        "digits_checkpoint.eqx.json",
    ],
    "compare_solvers.py": ["compare_solvers.png", "compare_solvers.json"],
    "likelihood.py": ["likelihood.json"],
    "annealed_langevin.py": ["annealed_langevin.png"],
    "inverse_digits.py": ["inverse_digits.json", "inverse_digits.png", "colourisation.png"],
}


def test_every_example_is_covered():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(OUTPUTS)


SLOW = set(OUTPUTS)  # all of them: CI runs `pytest -m slow tests/test_examples.py`


@pytest.mark.parametrize(
    "script", [pytest.param(s, marks=pytest.mark.slow) if s in SLOW else s for s in sorted(OUTPUTS)]
)
def test_example_smoke(script, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="1", MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--smoke", "--out", str(out)],
        cwd=tmp_path,  # nothing may depend on (or be written to) the repository's folder
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    for name in OUTPUTS[script]:
        path = out / name
        assert path.is_file() and path.stat().st_size > 0, f"{script} did not write {name}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "wrote outside --out"
