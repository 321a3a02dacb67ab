"""Environment throughput: JAX (vmap over episodes, scan over slots) against NumPy.

    python -m benchmarks.env_throughput                      # default scenario, 1..8192 episodes
    python -m benchmarks.env_throughput --quick              # smoke run (seconds)

For each number of parallel episodes ``E`` it compiles one ``rollout`` of the ``full_reuse``
policy (compile time reported apart), runs it until at least ``--min-seconds`` have passed, and
reports environment steps per second (one step = one slot of one episode, all APs) and UE-slots
per second. In the same run, the NumPy reference simulator (:mod:`jaxrrm.reference`, float64)
does the same work one episode at a time in a Python loop (how research simulators are usually
written) and vectorized over episodes. The ratios are the headline. Results go to
``benchmarks/results/env_throughput-<host>-<timestamp>.json`` with the machine, JAX version and
commit.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).parent / "results"


def _time_repeated(fn, min_seconds: float):
    """Mean wall and CPU time of ``fn()`` over as many calls as fit in ``min_seconds`` (>= 2).

    CPU time (all threads of this process) is reported beside wall time because it is far less
    sensitive to other work on a shared machine.
    """
    fn()  # warm-up
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_seconds and n >= 2:
            return dt / n, (time.process_time() - c0) / n, n


def bench_jax(cfg, params, policy_name: str, num_episodes: int, min_seconds: float) -> dict:
    import jax

    from jaxrrm import baselines, env

    policy = baselines.make(policy_name, cfg)
    fn = jax.jit(lambda k: env.rollout(k, policy, params, cfg, num_episodes).ue_rates_mbps)
    key = jax.random.key(0)
    t0 = time.perf_counter()
    compiled = fn.lower(key).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    temp_bytes = getattr(mem, "temp_size_in_bytes", None) if mem is not None else None
    counter = iter(range(1, 1 << 30))
    sec, cpu, reps = _time_repeated(lambda: jax.block_until_ready(
        compiled(jax.random.key(next(counter)))), min_seconds)
    steps = num_episodes * cfg.horizon
    return {"episodes": num_episodes, "compile_s": compile_s, "run_s": sec, "cpu_s": cpu,
            "repeats": reps, "steps_per_s": steps / sec, "steps_per_cpu_s": steps / cpu,
            "ue_slots_per_s": steps * cfg.num_ues / sec, "xla_temp_bytes": temp_bytes}


def bench_numpy(cfg, params, policy_name: str, num_episodes: int, batched: bool,
                min_seconds: float) -> dict:
    import numpy as np

    from jaxrrm import reference

    rng = np.random.default_rng(0)
    sec, cpu, reps = _time_repeated(
        lambda: reference.rollout(rng, policy_name, params, cfg, num_episodes, batched=batched),
        min_seconds)
    steps = num_episodes * cfg.horizon
    return {"episodes": num_episodes, "batched": batched, "run_s": sec, "cpu_s": cpu,
            "repeats": reps, "steps_per_s": steps / sec, "steps_per_cpu_s": steps / cpu,
            "ue_slots_per_s": steps * cfg.num_ues / sec}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.env_throughput",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--episodes", type=int, nargs="+", default=[1, 64, 1024, 8192],
                   help="numbers of parallel episodes for the JAX environment")
    p.add_argument("--numpy-loop-episodes", type=int, default=8,
                   help="episodes the one-at-a-time NumPy loop runs per timing")
    p.add_argument("--numpy-batched-episodes", type=int, nargs="*", default=[64, 1024, 8192],
                   help="episode counts for the vectorized NumPy reference (empty: skip)")
    p.add_argument("--policy", default="full_reuse", help="baseline policy driving the env")
    p.add_argument("--num-aps", type=int, default=None)
    p.add_argument("--num-ues", type=int, default=None)
    p.add_argument("--horizon", type=int, default=None)
    p.add_argument("--min-seconds", type=float, default=3.0, help="timing window per point")
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    p.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = p.parse_args(argv)

    import jax

    from experiments.common import machine_info
    from jaxrrm import EnvConfig, EnvParams

    kw = {k: v for k, v in dict(num_aps=args.num_aps, num_ues=args.num_ues,
                                horizon=args.horizon).items() if v is not None}
    if args.quick:
        kw.setdefault("horizon", 10)
        args.episodes = [1, 8]
        args.numpy_loop_episodes = 1
        args.numpy_batched_episodes = [8]
        args.min_seconds = 0.05
    cfg = EnvConfig(**kw)
    params = EnvParams.create(cfg)

    rows_jax, rows_np = [], []
    for e in args.episodes:
        r = bench_jax(cfg, params, args.policy, e, args.min_seconds)
        rows_jax.append(r)
        print(f"jax   E={e:6d}: {r['steps_per_s']:12.0f} steps/s  (compile {r['compile_s']:.1f} s)",
              flush=True)
    loop = bench_numpy(cfg, params, args.policy, args.numpy_loop_episodes, False, args.min_seconds)
    rows_np.append(loop)
    print(f"numpy loop (1 episode at a time): {loop['steps_per_s']:12.0f} steps/s", flush=True)
    for e in args.numpy_batched_episodes:
        r = bench_numpy(cfg, params, args.policy, e, True, args.min_seconds)
        rows_np.append(r)
        print(f"numpy vectorized E={e:6d}: {r['steps_per_s']:12.0f} steps/s", flush=True)

    batched = {r["episodes"]: r["steps_per_s"] for r in rows_np if r["batched"]}
    batched_cpu = {r["episodes"]: r["steps_per_cpu_s"] for r in rows_np if r["batched"]}
    ratios = []
    for r in rows_jax:
        row = {"episodes": r["episodes"], "vs_numpy_loop": r["steps_per_s"] / loop["steps_per_s"],
               "vs_numpy_loop_cpu": r["steps_per_cpu_s"] / loop["steps_per_cpu_s"]}
        if r["episodes"] in batched:
            row["vs_numpy_vectorized"] = r["steps_per_s"] / batched[r["episodes"]]
            row["vs_numpy_vectorized_cpu"] = (r["steps_per_cpu_s"]
                                              / batched_cpu[r["episodes"]])
        ratios.append(row)
        print(f"ratio E={r['episodes']:6d}: {row['vs_numpy_loop']:8.1f}x numpy loop"
              + (f", {row['vs_numpy_vectorized']:.2f}x numpy vectorized"
                 if "vs_numpy_vectorized" in row else ""))

    result = {
        "benchmark": "env_throughput", "schema_version": 1,
        "config": {"num_aps": cfg.num_aps, "num_ues": cfg.num_ues,
                   "num_candidates": cfg.num_candidates, "horizon": cfg.horizon,
                   "policy": args.policy, "quick": args.quick},
        "jax": rows_jax, "numpy": rows_np, "ratios": ratios,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "machine": machine_info(), "jax_version": jax.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out = args.out
    if out is None:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        out = RESULTS_DIR / f"env_throughput-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
