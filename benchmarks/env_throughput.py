"""Environment throughput: JAX (batched ``scan`` over slots) against the NumPy reference simulator.

    python -m benchmarks.env_throughput             # default scenario and larger networks (~30 min)
    python -m benchmarks.env_throughput --tiny      # smoke run (seconds; alias --quick)

For each scenario and number of parallel episodes ``E`` it compiles one ``rollout`` of the
``full_reuse`` policy (compile time reported apart), runs it until at least ``--min-seconds`` have
passed, and reports environment steps per second (one step = one slot of one episode, all APs)
and UE-slots per second (steps x UEs), both per second of wall time and per second of CPU time
(all threads of the process: the machine is shared, and CPU time is far less sensitive to other
work on it), the peak resident memory and XLA's buffer sizes. Both batch layouts of
:func:`jaxrrm.env.rollout` are measured: ``vmap`` (``vmap`` of the one-episode scan: the
straightforward port, and the library's default) and ``episodes_last`` (the step batched by hand
with the episode axis last).

In the same run the lean NumPy peer (:mod:`benchmarks.numpy_peer`: float32, vectorized over
episodes, what a researcher would write in NumPy for speed) runs at the vectorized episode counts;
it is the peer of the headline ratios (``vs_numpy_lean``). And the NumPy reference simulator
(:mod:`jaxrrm.testing.reference`, float64, single-threaded) does the same work one episode at a
time in a Python loop (how research simulators are usually written) and vectorized over episodes, with per-episode random streams (``streams="episode"``:
the same draws as the loop, one Generator call per episode and slot) and with one stream for the
batch (``streams="shared"``: one Generator call per slot, the fastest NumPy version). The ratios
are the headline.

Every point runs in its own subprocess (so that its peak memory is its own; ``--no-isolate``
runs them in this process). A point that fails (out of memory, say) is recorded with its error
and the sweep goes on. Results go to ``benchmarks/results/env_throughput-<timestamp>.json``
with the machine, its load average before and after each point, the JAX version and the commit;
``python -m benchmarks.report`` renders them into ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.harness import load_avg as _load
from benchmarks.harness import peak_rss_mib as _peak_rss_mib
from benchmarks.harness import time_calls as _time_calls
from experiments.cli import positive_float, positive_int
from benchmarks.harness import check_out, write_json

SCHEMA_VERSION = 2
LAYOUTS = ("episodes_last", "vmap")
#: Marks the result line a worker subprocess prints.
_WORKER_TAG = "ENV_THROUGHPUT_POINT "

#: Larger networks of the full run: (name, EnvConfig fields, JAX episode counts, NumPy vectorized
#: episode counts, episodes of the NumPy loop). ``EnvConfig`` allows at most 2**31 - 1 joint
#: actions ``(N + 1)**I`` (the centralized learner's int32 encoding), so 16 APs with the default
#: N = 3 and idle cannot be built: 15 APs it is; 64 APs need N = 1 without idle (one action per
#: AP: each AP serves its largest-PF-weight UE every slot). Shorter horizons keep the NumPy
#: runs to minutes.
LARGE_SCENARIOS = (
    ("15x256", dict(num_aps=15, num_ues=256, horizon=50), (1, 16, 64, 256, 1024), (16, 256), 2),
    ("64x1024", dict(num_aps=64, num_ues=1024, num_candidates=1, allow_idle=False, horizon=20),
     (1, 4, 16, 64, 256), (4, 16), 1),
)



def _rates(row: dict, steps: int, num_ues: int) -> dict:
    row.update(steps_per_s=steps / row["run_s"], steps_per_cpu_s=steps / row["cpu_s"],
               ue_slots_per_s=steps * num_ues / row["run_s"],
               cpu_per_wall=row["cpu_s"] / row["run_s"])
    return row


# --------------------------------------------------------------------------------------------
# One measurement point (run in a subprocess by default)
# --------------------------------------------------------------------------------------------

def measure_jax(config: dict, policy_name: str, num_episodes: int, layout: str,
                min_seconds: float) -> dict:
    """Compile and time ``env.rollout`` of ``num_episodes`` episodes in ``layout``."""
    import jax

    from jaxrrm import EnvConfig, EnvParams, baselines, env

    cfg = EnvConfig(**config)
    params = EnvParams.create(cfg)
    policy = baselines.make(policy_name, cfg)
    fn = jax.jit(lambda k: env.rollout(k, policy, params, cfg, num_episodes,
                                       layout=layout).ue_rates_mbps)
    load0 = _load()
    t0 = time.perf_counter()
    compiled = fn.lower(jax.random.key(0)).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    mem_bytes = {}
    for name in ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes",
                 "generated_code_size_in_bytes"):
        value = getattr(mem, name, None) if mem is not None else None
        mem_bytes["xla_" + name.replace("_size_in_bytes", "_bytes")] = value
    counter = iter(range(1, 1 << 30))
    run_s, cpu_s, reps = _time_calls(
        lambda: jax.block_until_ready(compiled(jax.random.key(next(counter)))), min_seconds,
        warmup=True)
    row = {"episodes": num_episodes, "layout": layout, "compile_s": compile_s, "run_s": run_s,
           "cpu_s": cpu_s, "repeats": reps, **mem_bytes, "peak_rss_mib": _peak_rss_mib(),
           "load_avg_1min": [load0, _load()]}
    return _rates(row, num_episodes * cfg.horizon, cfg.num_ues)


def measure_numpy(config: dict, policy_name: str, num_episodes: int, batched: bool,
                  streams: str, min_seconds: float) -> dict:
    """Time the NumPy reference on ``num_episodes`` episodes (loop or vectorized)."""
    import numpy as np

    from jaxrrm import EnvConfig, EnvParams
    from jaxrrm.testing import reference

    cfg = EnvConfig(**config)
    params = EnvParams.create(cfg)
    rng = np.random.default_rng(0)
    load0 = _load()
    run_s, cpu_s, reps = _time_calls(
        lambda: reference.rollout(rng, policy_name, params, cfg, num_episodes, batched=batched,
                                  streams=streams), min_seconds, warmup=False)
    row = {"episodes": num_episodes, "batched": batched, "streams": streams, "run_s": run_s,
           "cpu_s": cpu_s, "repeats": reps, "peak_rss_mib": _peak_rss_mib(),
           "load_avg_1min": [load0, _load()]}
    return _rates(row, num_episodes * cfg.horizon, cfg.num_ues)


def measure_numpy_lean(config: dict, num_episodes: int, min_seconds: float) -> dict:
    """Time the lean NumPy peer (:mod:`benchmarks.numpy_peer`: float32, vectorized over the
    episodes, ``full_reuse``) on ``num_episodes`` episodes."""
    import numpy as np

    from benchmarks import numpy_peer
    from jaxrrm import EnvConfig, EnvParams

    cfg = EnvConfig(**config)
    params = EnvParams.create(cfg)
    rng = np.random.default_rng(0)
    numpy_peer.rollout(rng, params, cfg, min(num_episodes, 8))  # imports, first-call costs
    load0 = _load()
    run_s, cpu_s, reps = _time_calls(lambda: numpy_peer.rollout(rng, params, cfg, num_episodes),
                                     min_seconds, warmup=False)
    row = {"episodes": num_episodes, "lean": True, "run_s": run_s, "cpu_s": cpu_s,
           "repeats": reps, "peak_rss_mib": _peak_rss_mib(), "load_avg_1min": [load0, _load()]}
    return _rates(row, num_episodes * cfg.horizon, cfg.num_ues)


def _measure(spec: dict) -> dict:
    if spec["kind"] == "numpy_lean":
        return measure_numpy_lean(spec["config"], spec["episodes"], spec["min_seconds"])
    if spec["kind"] == "jax":
        return measure_jax(spec["config"], spec["policy"], spec["episodes"], spec["layout"],
                           spec["min_seconds"])
    return measure_numpy(spec["config"], spec["policy"], spec["episodes"], spec["batched"],
                         spec["streams"], spec["min_seconds"])


def _run_point(spec: dict, isolate: bool, timeout_s: float) -> dict:
    """Measure one point, in a fresh subprocess if ``isolate``; failures become ``error`` rows."""
    head = {k: spec[k] for k in ("episodes", "layout", "batched", "streams", "kind")
            if k in spec}
    if not isolate:
        try:
            return _measure(spec)
        except Exception as exc:  # noqa: BLE001 - record and go on (e.g. out of memory)
            return {**head, "error": f"{type(exc).__name__}: {exc}"[:500]}
    cmd = [sys.executable, "-m", "benchmarks.env_throughput", "--worker", json.dumps(spec)]
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(root)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=root,
                              env=env, check=False)
    except subprocess.TimeoutExpired:
        return {**head, "error": f"timed out after {timeout_s:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(_WORKER_TAG):
            return json.loads(line[len(_WORKER_TAG):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    reason = "killed (out of memory?)" if proc.returncode in (-9, 137) else "failed"
    return {**head, "error": f"{reason}, exit status {proc.returncode}: " + " | ".join(tail)}


# --------------------------------------------------------------------------------------------
# Sweeps
# --------------------------------------------------------------------------------------------

def _ratios(rows_jax, rows_np, rows_lean=()) -> list:
    """Speed-ups of each JAX row over the NumPy loop, the vectorized NumPy reference and the
    lean NumPy peer (same E)."""
    loop = next((r for r in rows_np if not r["batched"] and "error" not in r), None)
    vec = {(r["episodes"], r["streams"]): r for r in rows_np if r["batched"] and "error" not in r}
    lean = {r["episodes"]: r for r in rows_lean if "error" not in r}
    out = []
    for r in rows_jax:
        if "error" in r:
            continue
        row = {"episodes": r["episodes"], "layout": r["layout"]}
        if loop is not None:
            row["vs_numpy_loop"] = r["steps_per_s"] / loop["steps_per_s"]
            row["vs_numpy_loop_cpu"] = r["steps_per_cpu_s"] / loop["steps_per_cpu_s"]
        for streams, key in (("episode", "vs_numpy_vectorized"),
                             ("shared", "vs_numpy_vectorized_shared")):
            v = vec.get((r["episodes"], streams))
            if v is not None:
                row[key] = r["steps_per_s"] / v["steps_per_s"]
                row[key + "_cpu"] = r["steps_per_cpu_s"] / v["steps_per_cpu_s"]
        if r["episodes"] in lean:
            row["vs_numpy_lean"] = r["steps_per_s"] / lean[r["episodes"]]["steps_per_s"]
            row["vs_numpy_lean_cpu"] = (r["steps_per_cpu_s"]
                                        / lean[r["episodes"]]["steps_per_cpu_s"])
        out.append(row)
    return out


def _fmt_row(r: dict) -> str:
    if "error" in r:
        return f"ERROR {r['error']}"
    extra = f", compile {r['compile_s']:.1f} s" if "compile_s" in r else ""
    return (f"{r['steps_per_s']:12,.0f} steps/s wall, {r['steps_per_cpu_s']:12,.0f} per CPU-s "
            f"(CPU/wall {r['cpu_per_wall']:.2f}{extra}, peak RSS {r['peak_rss_mib']:.0f} MiB, "
            f"load {r['load_avg_1min'][1]:.1f})")


def run_scenario(name: str, config: dict, jax_episodes, layouts, numpy_vec_episodes,
                 numpy_streams, numpy_loop_episodes: int, policy: str, min_seconds: float,
                 isolate: bool, max_links: int, timeout_s: float) -> dict:
    """All points of one scenario: JAX per layout and E, the NumPy loop, NumPy vectorized."""
    from jaxrrm import EnvConfig

    cfg = EnvConfig(**config)
    links = cfg.num_aps * cfg.num_ues
    print(f"== {name}: {cfg.num_aps} APs x {cfg.num_ues} UEs, N = {cfg.num_candidates}, "
          f"T = {cfg.horizon}", flush=True)
    base = {"config": config, "policy": policy, "min_seconds": min_seconds}
    rows_jax, rows_np, rows_lean = [], [], []
    r = _run_point({**base, "kind": "numpy", "episodes": numpy_loop_episodes, "batched": False,
                    "streams": "episode"}, isolate, timeout_s)
    rows_np.append(r)
    print(f"numpy loop ({numpy_loop_episodes} episodes, one at a time): {_fmt_row(r)}", flush=True)
    # JAX and vectorized NumPy of the same E back to back, so that they meet similar loads.
    for e in sorted(set(jax_episodes) | set(numpy_vec_episodes)):
        for layout in layouts if e in jax_episodes else ():
            if e * links > max_links:
                r = {"episodes": e, "layout": layout,
                     "error": f"skipped: {e * links:,} links per step > --max-links {max_links:,}"}
            else:
                r = _run_point({**base, "kind": "jax", "episodes": e, "layout": layout},
                               isolate, timeout_s)
            rows_jax.append(r)
            print(f"jax {layout:>13s} E={e:6d}: {_fmt_row(r)}", flush=True)
        for streams in numpy_streams if e in numpy_vec_episodes else ():
            r = _run_point({**base, "kind": "numpy", "episodes": e, "batched": True,
                            "streams": streams}, isolate, timeout_s)
            rows_np.append(r)
            print(f"numpy vectorized ({streams:>7s} streams) E={e:6d}: {_fmt_row(r)}", flush=True)
        if e in numpy_vec_episodes:
            r = _run_point({**base, "kind": "numpy_lean", "episodes": e}, isolate, timeout_s)
            rows_lean.append(r)
            print(f"numpy lean peer (float32)      E={e:6d}: {_fmt_row(r)}", flush=True)
    ratios = _ratios(rows_jax, rows_np, rows_lean)
    for row in ratios:
        parts = ([f"{row['vs_numpy_loop']:.0f}x loop (CPU {row['vs_numpy_loop_cpu']:.0f}x)"]
                 if "vs_numpy_loop" in row else [])
        for key, label in (("vs_numpy_vectorized", "vectorized"),
                           ("vs_numpy_vectorized_shared", "vectorized-shared"),
                           ("vs_numpy_lean", "lean peer")):
            if key in row:
                parts.append(f"{row[key]:.2f}x {label} (CPU {row[key + '_cpu']:.2f}x)")
        print(f"ratio {row['layout']:>13s} E={row['episodes']:6d}: " + ", ".join(parts))
    full_cfg = {"num_aps": cfg.num_aps, "num_ues": cfg.num_ues,
                "num_candidates": cfg.num_candidates, "allow_idle": cfg.allow_idle,
                "horizon": cfg.horizon, "policy": policy}
    return {"name": name, "config": full_cfg, "jax": rows_jax, "numpy": rows_np,
            "numpy_lean": rows_lean, "ratios": ratios}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.env_throughput",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--episodes", type=positive_int, nargs="+",
                   default=[1, 8, 64, 256, 1024, 4096, 8192, 16384],
                   help="numbers of parallel episodes for JAX in the default scenario")
    p.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS),
                   help="batch layouts of env.rollout to measure")
    p.add_argument("--numpy-loop-episodes", type=positive_int, default=8,
                   help="episodes the one-at-a-time NumPy loop runs per timing")
    p.add_argument("--numpy-batched-episodes", type=positive_int, nargs="*", default=[64, 1024, 8192],
                   help="episode counts for the vectorized NumPy reference (empty: skip)")
    p.add_argument("--numpy-streams", nargs="+", choices=("episode", "shared"),
                   default=["episode", "shared"], help="random streams of vectorized NumPy")
    p.add_argument("--policy", default="full_reuse", help="baseline policy driving the env")
    p.add_argument("--num-aps", type=positive_int, default=None)
    p.add_argument("--num-ues", type=positive_int, default=None)
    p.add_argument("--horizon", type=positive_int, default=None)
    p.add_argument("--no-large", action="store_true",
                   help="skip the larger networks (" + ", ".join(s[0] for s in LARGE_SCENARIOS)
                   + ")")
    p.add_argument("--min-seconds", type=positive_float, default=3.0, help="timing window per point")
    p.add_argument("--max-links", type=positive_int, default=1 << 25,
                   help="skip JAX points with more episodes x APs x UEs than this")
    p.add_argument("--timeout", type=positive_float, default=1800.0, help="seconds per point")
    p.add_argument("--no-isolate", action="store_true",
                   help="measure in this process (peak memory is then the sweep's so far)")
    p.add_argument("--tiny", "--quick", dest="tiny", action="store_true",
                   help="smoke run: tiny sizes, in this process unless --isolate")
    p.add_argument("--isolate", action="store_true", help="subprocess per point even with --tiny")
    p.add_argument("--out", type=Path, default=None, help="JSON output path")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    check_out(args.out)

    if args.worker is not None:  # one point, in a subprocess of a sweep
        print(_WORKER_TAG + json.dumps(_measure(json.loads(args.worker))), flush=True)
        return 0

    import jax

    from experiments.outputs import machine_info

    kw = {k: v for k, v in dict(num_aps=args.num_aps, num_ues=args.num_ues,
                                horizon=args.horizon).items() if v is not None}
    large = [] if (args.no_large or kw) else list(LARGE_SCENARIOS)
    isolate = not args.no_isolate
    if args.tiny:
        kw.setdefault("horizon", 10)
        args.episodes = [1, 8]
        args.numpy_loop_episodes = 1
        args.numpy_batched_episodes = [8]
        args.min_seconds = 0.05
        isolate = args.isolate
        large = []

    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load_start = _load()
    common = dict(policy=args.policy, min_seconds=args.min_seconds, isolate=isolate,
                  max_links=args.max_links, timeout_s=args.timeout)
    scenarios = [run_scenario("default", kw, args.episodes, args.layouts,
                              args.numpy_batched_episodes, args.numpy_streams,
                              args.numpy_loop_episodes, **common)]
    for name, config, jax_e, np_e, loop_e in large:
        scenarios.append(run_scenario(name, config, jax_e, args.layouts, np_e,
                                      args.numpy_streams, loop_e, **common))

    main_s = scenarios[0]
    headline = args.layouts[0]
    result = {
        "benchmark": "env_throughput", "schema_version": SCHEMA_VERSION,
        # The default scenario at the top level (schema 1's fields): "jax" holds the rows of the
        # headline layout, "jax_layouts" those of every layout.
        "config": {**main_s["config"], "quick": args.tiny},
        "headline_layout": headline,
        "jax": [r for r in main_s["jax"] if r.get("layout") == headline],
        "jax_layouts": main_s["jax"],
        "numpy": main_s["numpy"],
        "numpy_lean": main_s["numpy_lean"],
        "ratios": main_s["ratios"],
        "scenarios": scenarios[1:],
        "isolated": isolate,
        "peak_rss_mib": max([_peak_rss_mib()] + [r["peak_rss_mib"] for s in scenarios
                                                 for r in s["jax"] + s["numpy"]
                                                 if "peak_rss_mib" in r]),
        "threads": {"cpu_count": os.cpu_count(),
                    "numpy": "single-threaded (no BLAS in the step)",
                    "jax": "XLA CPU runtime: large fused kernels split into parallel tasks on "
                           "its intra-op thread pool (one thread per core); cpu_per_wall is the "
                           "cores it kept busy on average"},
        "load_avg_1min": {"start": load_start, "end": _load()},
        "machine": machine_info(), "jax_version": jax.__version__,
        "started": started, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out = write_json(result, args.out, "env_throughput")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
