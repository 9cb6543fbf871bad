"""The solver-comparison benchmark behind `scoresde bench`.

- `problems.py`: the table of problems (exact-score mixtures, trained MLP and U-Net);
- `solvers.py`: the table of samplers and how an NFE budget becomes steps;
- `measure.py`: the reference solution, the metrics, timing of one sampler run;
- `report.py`: the JSON (validated by `schema.json`), Markdown and work-precision plots;
- `suite.py`: `run_bench(BenchConfig(...))`, which ties them together.
"""

from .suite import BenchConfig as BenchConfig, run_bench as run_bench
