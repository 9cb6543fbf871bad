"""Tuning for a budget: time grids learned for one model, solver and number of steps
(`tune_grid`), kept as values (`TimeGrid`), and the choice of solver for a budget
(`tune_sampler`)."""
