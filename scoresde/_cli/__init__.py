"""The `scoresde` command-line application, one module per command.

- `demo.py`: `scoresde demo` (analytic 2-D mixture, several samplers);
- `train.py`: `scoresde train` (a checkpoint and a loss curve);
- `sample.py`: `scoresde sample` (samples from a checkpoint, or on a tuned grid);
- `tune.py`: `scoresde tune` (a time grid and solver tuned for a checkpoint and a budget);
- `inpaint.py`: `scoresde inpaint` (complete masked test digits, guided sampling);
- `nll.py`: `scoresde nll` (held-out likelihood of a checkpoint);
- `bench.py`: `scoresde bench` (the solver-comparison benchmark);
- `common.py`: what several commands share (usage errors, output folders, messages).

Each command module has `add_parser(subparsers)` and `run(args) -> int`; `scoresde.cli`
assembles the top-level parser from them. The commands parse flags and call the library: the
training recipes, checkpoints and recipe sampling are `scoresde._training.recipes`, the
benchmark harness is `scoresde._bench`; nothing in the library imports this package.
"""
