"""`scoresde bench`: run the sampler table on the problem table; write JSON, Markdown and PNGs."""

import dataclasses
import json
import pathlib
import sys
import time

import jax.random as jr

from .._metrics import sample_distances as _metrics
from . import measure as measure, problems as _problems, report as report, solvers as _solvers


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What one `scoresde bench` run measures; `None` fields take the (quick) defaults."""

    out: pathlib.Path | None
    quick: bool = False
    problems: tuple[str, ...] | None = None
    samplers: tuple[str, ...] | None = None
    nfes: tuple[int, ...] | None = None
    tolerances: tuple[float, ...] | None = None
    num_samples: int | None = None
    repeats: int | None = None
    seed: int = 0
    cache: pathlib.Path | None = None

    def resolved(self) -> "BenchConfig":
        q = self.quick
        return dataclasses.replace(
            self,
            problems=self.problems
            or (_problems.QUICK_PROBLEMS if q else tuple(_problems.PROBLEMS)),
            samplers=self.samplers
            or (_solvers.QUICK_SAMPLERS if q else tuple(s.name for s in _solvers.SAMPLERS)),
            nfes=self.nfes or (_solvers.QUICK_NFES if q else _solvers.NFES),
            tolerances=self.tolerances or (_solvers.QUICK_TOLERANCES if q else _solvers.TOLERANCES),
            repeats=self.repeats or (1 if q else 3),
            cache=self.cache or _problems.default_cache(),
        )

    def check(self):
        for name in self.problems:
            if name not in _problems.PROBLEMS:
                raise ValueError(
                    f"unknown problem {name!r}; choose from {', '.join(_problems.PROBLEMS)}."
                )
        _solvers.get_samplers(self.samplers)
        if any(n < 2 for n in self.nfes):
            raise ValueError(f"NFE budgets must be >= 2; got {list(self.nfes)}.")
        if any(not 0 < t < 1 for t in self.tolerances):
            raise ValueError(f"tolerances must lie in (0, 1); got {list(self.tolerances)}.")
        if self.num_samples is not None and self.num_samples < 2:
            raise ValueError(f"num_samples must be >= 2; got {self.num_samples}.")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1; got {self.repeats}.")


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def run_bench(config: BenchConfig) -> dict:
    """Run the benchmark `config` describes; write `bench.json`, `bench.md` and one
    `work_precision_<problem>.png` per problem to `config.out` (nothing if it is `None`).
    Returns the JSON payload."""
    config = config.resolved()
    config.check()
    out = None if config.out is None else pathlib.Path(config.out)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    specs = _solvers.get_samplers(config.samplers)
    assert config.problems is not None and config.nfes is not None  # filled by check()
    started = time.perf_counter()
    key = jr.key(config.seed)
    problems_out = []
    for p_index, name in enumerate(config.problems):
        key_p = jr.fold_in(key, p_index)
        k_build, k_noise, k_metric, k_nll, k_sample = jr.split(key_p, 5)
        _log(f"bench: [{name}] building")
        problem = _problems.make_problem(
            name, num=config.num_samples, key=k_build, quick=config.quick, cache=config.cache
        )
        x_T = problem.noise(k_noise)
        ref, ref_info = measure.reference_solution(
            problem, x_T, tol64=1e-8 if config.quick else 1e-10
        )
        bandwidth = _metrics.median_bandwidth(problem.reference)
        floors = measure.floors(problem, bandwidth, k_metric)
        nll = measure.negative_log_likelihood(problem, k_nll)
        runs = [
            (spec, budget)
            for spec in specs
            for budget in (config.tolerances if spec.adaptive else config.nfes) or ()
            if spec.adaptive or spec.steps_for(int(budget)) >= 1
        ]
        rows = []
        for i, (spec, budget) in enumerate(runs, 1):
            row = measure.run_sampler(
                spec,
                problem,
                budget,
                key=k_sample,
                x_T=x_T,
                ref=ref,
                bandwidth=bandwidth,
                repeats=config.repeats,
                metric_key=k_metric,
            )
            rows.append(row)
            summary = (
                f"NFE {row['nfe_mean']:.0f}, SW2 {row['sliced_w2']:.3g}"
                + (f", err {row['err_ref']:.3g}" if row["err_ref"] is not None else "")
                if row["status"] == "ok"
                else row["status"]
            )
            _log(f"bench: [{name}] {i}/{len(runs)} {spec.name} ({row['setting']}): {summary}")
        problems_out.append(
            {
                "name": problem.name,
                "description": problem.description,
                "sde": repr(problem.sde),
                "dim": int(x_T[0].size),
                "num_samples": problem.num_samples,
                "checkpoint": problem.checkpoint,
                "reference": ref_info,
                "bandwidth": bandwidth,
                "floors": floors,
                "nll": nll,
                "rows": rows,
            }
        )
        # written after every problem, so that a crash later keeps what is done
        payload = _write(config, out, started, problems_out)
    return payload


def _write(config, out, started, problems_out) -> dict:
    """Write bench.json, bench.md and the plots of the problems done so far (to `out`, unless it
    is `None`); the payload."""
    payload = {
        "schema_version": report.SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "parameters": {
            "quick": config.quick,
            "problems": list(config.problems),
            "samplers": list(config.samplers),
            "nfes": list(config.nfes),
            "tolerances": list(config.tolerances),
            "num_samples": config.num_samples,
            "repeats": config.repeats,
            "seed": config.seed,
            "t_eps": _problems.T_EPS,
        },
        **report.environment(),
        "total_seconds": time.perf_counter() - started,
        "problems": problems_out,
    }
    if out is None:
        return payload
    (out / "bench.json").write_text(json.dumps(payload, indent=1))
    (out / "bench.md").write_text(report.markdown(payload))
    for prob in problems_out:
        report.plot(prob, out / f"work_precision_{prob['name']}.png")
    return payload
