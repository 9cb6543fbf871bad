"""First-call compile time of the entry points: tracing, lowering and XLA compilation apart.

    python benchmarks/compile_time.py [--processes 3] [--entries sample_sde ...]
                                      [--tree base=/path/to/other/checkout ...] [--out NAME]

The problem: the 2-D `ss.analytic.ring_mixture()` under `ss.VPSDE()`, its exact score
`ss.analytic.marginal_score`, float32, a batch of 256. Each entry point is called once in a
FRESH Python process (JAX caches traces and executables per process), `--processes` times,
the processes of all entry points and trees interleaved round by round so that load on a shared
machine hits each alike. In each process, after the problem is built (its own small compiles are
not counted), `jax.monitoring`'s duration events split the first call into

- `trace`: Python to jaxpr (`/jax/core/compile/jaxpr_trace_duration`, outermost traces only);
- `lower`: jaxpr to StableHLO (`.../jaxpr_to_mlir_module_duration`);
- `compile`: XLA (`.../backend_compile_duration`);
- `other`: the rest of the first call's wall time (Python outside jit, dispatch, the run itself);

`first` is the first call's wall time, `first_cpu` the CPU time this process spent in it (all
its threads: on a loaded machine a steadier figure than wall time, and the wall time of a quiet
one when XLA compiles on one thread), and `run` a second call's wall time (the run alone). Each figure is
the median over processes with [min, max]; with `--tree`, each tree's `first` is also given as
a ratio to the first tree's, round by round (median [min, max]). `--tree LABEL=DIR` runs the
workers with `PYTHONPATH=DIR` so that they import that checkout's `scoresde` (default: this
one). Writes `benchmarks/results/<out>.json` (default `compile_time`) with the settings, each
process's figures and its largest sub-programs, versions, machine and commits.
"""

import argparse
import collections
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
BATCH = 256
EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "compile",
}
ENTRIES = (
    "sample_sde",
    "sample_ode_unipc",
    "sample_ode_tsit5",
    "sample_pc",
    "sample_edm",
    "log_likelihood",
)
SETTINGS = {
    "sample_sde": "ss.sample_sde(solver=diffrax.Euler(), steps=100)",
    "sample_ode_unipc": "ss.sample_ode(solver=ss.UniPC(), steps=10)",
    "sample_ode_tsit5": "ss.sample_ode() (Tsit5, PID controller)",
    "sample_pc": "ss.sample_pc() (defaults)",
    "sample_edm": "ss.sample_edm() (defaults)",
    "log_likelihood": "ss.log_likelihood(key=...) (defaults)",
}


def _call(entry: str):
    """The first call of `entry` on the ring problem, as a zero-argument function."""
    import diffrax as dfx
    import jax
    import jax.random as jr

    import scoresde as ss

    sde = ss.VPSDE()
    dist = ss.analytic.ring_mixture()
    score = ss.analytic.marginal_score(dist, sde)
    key = jr.key(0)
    x = jax.block_until_ready(dist.sample(jr.key(1), BATCH))
    shape = (BATCH, 2)
    calls = {
        "sample_sde": lambda: ss.sample_sde(
            sde, score, key=key, shape=shape, solver=dfx.Euler(), steps=100
        ),
        "sample_ode_unipc": lambda: ss.sample_ode(
            sde, score, key=key, shape=shape, solver=ss.UniPC(), steps=10
        ),
        "sample_ode_tsit5": lambda: ss.sample_ode(sde, score, key=key, shape=shape),
        "sample_pc": lambda: ss.sample_pc(sde, score, key=key, shape=shape),
        "sample_edm": lambda: ss.sample_edm(sde, score, key=key, shape=shape),
        "log_likelihood": lambda: ss.log_likelihood(sde, score, x, key=key),
    }
    return calls[entry]


def _block(out):
    import jax

    jax.block_until_ready([leaf for leaf in jax.tree.leaves(out) if isinstance(leaf, jax.Array)])


def worker(entry: str) -> dict:
    """One fresh process: import, build the problem, time the first and a second call."""
    start = time.perf_counter()
    import jax

    import scoresde as ss

    import_s = time.perf_counter() - start
    events = []

    def listen(event, duration, **kwargs):
        if event in EVENTS:
            events.append((EVENTS[event], str(kwargs.get("fun_name", "?")), duration))

    jax.monitoring.register_event_duration_secs_listener(listen)
    call = _call(entry)
    events.clear()
    cpu_start, start = time.process_time(), time.perf_counter()
    _block(call())
    first = time.perf_counter() - start
    first_cpu = time.process_time() - cpu_start  # all of this process's threads
    first_events = list(events)
    start = time.perf_counter()
    _block(call())
    run = time.perf_counter() - start
    parts = {part: 0.0 for part in EVENTS.values()}
    by_name = collections.defaultdict(float)
    counts = collections.Counter()
    for part, name, duration in first_events:
        parts[part] += duration
        by_name[f"{part}:{name}"] += duration
        counts[part] += 1
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:12]
    return dict(
        entry=entry,
        first=first,
        first_cpu=first_cpu,
        run=run,
        other=first - sum(parts.values()),
        **parts,
        counts=dict(counts),
        import_s=import_s,
        top=top,
        scoresde=ss.__file__,
        versions=_versions(),
        device=str(jax.devices()[0]),
    )


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("jax", "jaxlib", "equinox", "diffrax", "jaxtyping", "lineax", "optimistix"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def _commit(tree: pathlib.Path) -> str:
    def git(*args):
        return subprocess.run(
            ["git", "-C", str(tree), *args], capture_output=True, text=True
        ).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("-dirty" if git("status", "--porcelain", "--", "scoresde") else "")


def _spawn(entry: str, tree: pathlib.Path, timeout: float) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", ""))
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", entry],
        capture_output=True,
        text=True,
        env=env,
        cwd=tree,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {entry} in {tree} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _stats(values) -> dict:
    return dict(median=statistics.median(values), min=min(values), max=max(values), n=len(values))


def _fmt(s: dict) -> str:
    return f"{s['median']:5.2f} [{s['min']:.2f}, {s['max']:.2f}]"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=3, help="fresh processes per entry")
    parser.add_argument("--entries", nargs="+", choices=ENTRIES, default=list(ENTRIES))
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=DIR")
    parser.add_argument("--out", default="compile_time", help="results/<out>.json")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per process")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return {}
    trees = dict(t.split("=", 1) for t in args.tree) if args.tree else {"this": str(ROOT)}
    trees = {label: pathlib.Path(path).resolve() for label, path in trees.items()}
    runs = {(e, label): [] for e in args.entries for label in trees}
    for round_ in range(args.processes):
        for entry in args.entries:
            for label, tree in trees.items():
                r = _spawn(entry, tree, args.timeout)
                runs[entry, label].append(r)
                print(
                    f"round {round_} {entry:16s} {label:6s} first {r['first']:.2f}s "
                    f"(cpu {r['first_cpu']:.2f}s) "
                    f"(trace {r['trace']:.2f} lower {r['lower']:.2f} compile {r['compile']:.2f})",
                    flush=True,
                )
    first_label = next(iter(trees))
    table = []
    print(
        f"\n{'entry point':16s} {'tree':6s} {'first call s':>20s} {'first call cpu s':>20s} "
        f"{'trace s':>20s} "
        f"{'lower s':>20s} {'XLA compile s':>20s} {'other s':>20s} {'run s':>6s} "
        f"{'jits':>4s} {'first / ' + first_label:>20s}"
    )
    for entry in args.entries:
        for label in trees:
            rs = runs[entry, label]
            row = dict(entry=entry, setting=SETTINGS[entry], tree=label)
            for part in ("first", "first_cpu", "trace", "lower", "compile", "other", "run"):
                row[part] = _stats([r[part] for r in rs])
            row["compiles"] = statistics.median(r["counts"].get("compile", 0) for r in rs)
            ratios = [
                r["first"] / b["first"] for r, b in zip(rs, runs[entry, first_label], strict=True)
            ]
            row["first_ratio"] = _stats(ratios)
            table.append(row)
            print(
                f"{entry:16s} {label:6s} {_fmt(row['first']):>20s} {_fmt(row['first_cpu']):>20s} "
                f"{_fmt(row['trace']):>20s} "
                f"{_fmt(row['lower']):>20s} {_fmt(row['compile']):>20s} "
                f"{_fmt(row['other']):>20s} {row['run']['median']:6.3f} {row['compiles']:4.0f} "
                f"{_fmt(row['first_ratio']):>20s}"
            )
    any_run = next(iter(runs.values()))[0]
    payload = dict(
        benchmark="compile_time",
        settings=dict(
            problem="ss.analytic.ring_mixture(), ss.VPSDE(), exact marginal score, float32",
            batch=BATCH,
            processes=args.processes,
            entries={e: SETTINGS[e] for e in args.entries},
            events=EVENTS,
        ),
        trees={label: dict(path=str(t), commit=_commit(t)) for label, t in trees.items()},
        versions=any_run["versions"],
        machine=dict(
            device=any_run["device"],
            platform=platform.platform(),
            cpu_count=os.cpu_count(),
            load_average=os.getloadavg(),
        ),
        table=table,
        processes={f"{e} {label}": rs for (e, label), rs in runs.items()},
    )
    path = HERE / "results" / f"{args.out}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
