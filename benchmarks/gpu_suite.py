"""The headline figures on one accelerator in one call (about 6 minutes on one NVIDIA GPU).

    PYTHONPATH=. python -m benchmarks.gpu_suite              # on the GPU machine, repo root
    python -m benchmarks.gpu_suite --dry-run                 # CPU: tiny sizes, same code paths

Three parts, each recorded in ``benchmarks/results/gpu_suite-<timestamp>.json`` with the
machine, the JAX version and devices and the commit, and printed as one summary line per target:

1. **Environment throughput**: ``env.rollout`` of the ``full_reuse`` policy in the default
   scenario for 10^4, 10^5 and 10^6 parallel episodes (both batch layouts at 10^6); environment
   steps per second of wall time (one step = one slot of one episode). Target: >= 10^7 steps/s.
2. **Trainer**: one compiled chunk of offline CQL updates for the three paradigms (centralized,
   independent, CTDE) at 1 and 16 vmapped seeds, the same updates per chunk. Target: 16 seeds
   take <= 1.5x the wall time of one seed (seeds are nearly free on an accelerator).
3. **Main job at paper size**: ``python -m experiments.ctde --preset paper --seeds 4
   --updates 10000`` (the paper's sizes otherwise: 320 K transitions, 256x256 networks, 512 test
   episodes per seed), timed end to end in a subprocess with the behaviour dataset made inside
   the run, and stopped at the budget if it does not fit in the time the first two parts left.

It needs the core dependencies (JAX with its accelerator plugin, flax, optax,
orbax-checkpoint, numpy, scipy, tqdm) and the ``experiments`` extra (matplotlib:
``pip install -e ".[experiments]"``), installs nothing, uses no network, and runs from the
repository root (``PYTHONPATH=.``). ``--dry-run`` runs
every part at tiny sizes on any backend (CI runs it on CPU); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from experiments.cli import positive_float
from benchmarks.harness import check_out, write_json

SCHEMA_VERSION = 1

#: Targets of the summary lines.
ENV_TARGET_STEPS_PER_S = 1e7
SEED_RATIO_TARGET = 1.5
PARADIGMS = ("centralized", "independent", "ctde")

#: Sizes of a real run and of --dry-run.
FULL = dict(episodes=(10_000, 100_000, 1_000_000), last_layout_episodes=1_000_000,
            env_seconds=2.0, seeds=(1, 16), chunk=200, batch=256, dataset_rows=100_000,
            train_seconds=2.0, ctde_seeds=4, ctde_updates=10_000, ctde_reserve_s=30.0)
DRY = dict(episodes=(4, 16), last_layout_episodes=16, env_seconds=0.05, seeds=(1, 2), chunk=4,
           batch=16, dataset_rows=500, train_seconds=0.05, ctde_seeds=1, ctde_updates=100,
           ctde_reserve_s=0.0)



def env_part(sizes: dict, dry: bool) -> list:
    from benchmarks.env_throughput import measure_jax

    config = dict(num_aps=2, num_ues=6, num_candidates=2, horizon=10) if dry else {}
    points = [(e, "vmap") for e in sizes["episodes"]]
    points.append((sizes["last_layout_episodes"], "episodes_last"))
    rows = []
    for episodes, layout in points:
        t0 = time.perf_counter()
        try:
            row = measure_jax(config, "full_reuse", episodes, layout, sizes["env_seconds"])
            row["status"] = "ok"
        except Exception as err:  # noqa: BLE001 - out of memory on a small GPU, say
            row = {"episodes": episodes, "layout": layout, "status": "error",
                   "error": f"{type(err).__name__}: {str(err)[:300]}"}
        row["part_s"] = time.perf_counter() - t0
        rows.append(row)
        if row["status"] == "ok":
            print(f"env  E={episodes:>9,d} {layout:13s} {row['steps_per_s']:14,.0f} steps/s "
                  f"(compile {row['compile_s']:.1f} s)", flush=True)
        else:
            print(f"env  E={episodes:>9,d} {layout:13s} {row['error']}", flush=True)
    return rows


def trainer_part(sizes: dict, dry: bool) -> list:
    from benchmarks.train_throughput import bench_jax, synthetic_dataset
    from jaxrrm import EnvConfig, EnvParams, data
    from jaxrrm.algos import cql
    from jaxrrm.algos.netconfig import NetConfig

    if dry:
        cfg = EnvConfig(num_aps=2, num_ues=6, num_candidates=2, horizon=10)
        net = NetConfig(hidden=(16,), shared=False)
        base = cql.CQLConfig(critic_net=net, actor_net=net)
    else:
        cfg, base = EnvConfig(), cql.CQLConfig()
    params = EnvParams.create(cfg)
    dataset = data.to_device(synthetic_dataset(cfg, sizes["dataset_rows"]))
    rows = []
    for paradigm in PARADIGMS:
        for s in sizes["seeds"]:
            r = bench_jax(cfg, params, base.replace(paradigm=paradigm), dataset, s,
                          sizes["batch"], sizes["chunk"], sizes["train_seconds"])
            rows.append(r)
            if r["status"] == "ok":
                print(f"train {paradigm:12s} S={s:3d}: {r['ms_per_call']:9.2f} ms per chunk of "
                      f"{sizes['chunk']} updates ({r['seed_updates_per_s']:,.0f} "
                      f"seed-updates/s, compile {r['compile_s']:.1f} s)", flush=True)
            else:
                print(f"train {paradigm:12s} S={s:3d}: {r.get('error')}", flush=True)
    return rows


def ctde_part(sizes: dict, dry: bool, time_left_s: float) -> dict:
    from benchmarks.train_throughput import time_ctde_e2e

    if dry:
        args = ["--quick", "--seeds", "1", "--learners", "bc", "--baselines", "tdm",
                "--env", "num_aps=2", "--env", "num_ues=4", "--env", "num_candidates=2"]
    else:
        args = ["--preset", "paper", "--seeds", str(sizes["ctde_seeds"]), "--updates",
                str(sizes["ctde_updates"])]
    timeout = max(time_left_s - sizes["ctde_reserve_s"], 30.0)
    row = time_ctde_e2e(args, timeout=timeout)
    row["timeout_s"] = timeout
    print(f"ctde {' '.join(args)}: {row['status']} in {row['wall_s']:.0f} s"
          + (f" ({row.get('error')})" if row["status"] != "ok" else ""), flush=True)
    return row


def summary_lines(env_rows: list, train_rows: list, ctde: dict) -> list:
    """One line per target: what was measured, the target, PASS / FAIL / not measured."""
    lines = []
    ok = [r for r in env_rows if r.get("status") == "ok"]
    if ok:
        best = max(ok, key=lambda r: r["steps_per_s"])
        verdict = "PASS" if best["steps_per_s"] >= ENV_TARGET_STEPS_PER_S else "FAIL"
        lines.append(f"env throughput: {best['steps_per_s']:,.0f} steps/s at "
                     f"E={best['episodes']:,} ({best['layout']}); target >= "
                     f"{ENV_TARGET_STEPS_PER_S:.0e}: {verdict}")
    else:
        lines.append("env throughput: not measured (every point failed)")
    for paradigm in PARADIGMS:
        rs = {r["seeds"]: r for r in train_rows
              if r["paradigm"] == paradigm and r.get("status") == "ok"}
        seeds = sorted(rs)
        if len(seeds) >= 2:
            one, many = rs[seeds[0]], rs[seeds[-1]]
            ratio = many["ms_per_call"] / one["ms_per_call"]
            verdict = "PASS" if ratio <= SEED_RATIO_TARGET else "FAIL"
            lines.append(f"trainer {paradigm}: {seeds[-1]} seeds take {ratio:.2f}x the time of "
                         f"{seeds[0]}; target <= {SEED_RATIO_TARGET}x: {verdict}")
        else:
            lines.append(f"trainer {paradigm}: not measured")
    lines.append(f"main job ({ctde.get('command', '?')}): {ctde.get('status')} in "
                 f"{ctde.get('wall_s', float('nan')):.0f} s wall")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_suite",
        description="Environment throughput up to 10^6 episodes, the trainer at 1 and 16 seeds "
                    "for three paradigms and the paper-size main job, in about 6 minutes on "
                    "one GPU; JSON into benchmarks/results/.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dry-run", action="store_true",
                   help="tiny sizes on any backend (a check of the code paths, for CI)")
    p.add_argument("--budget-s", type=positive_float, default=360.0,
                   help="wall-time budget; the main job gets what the first two parts leave")
    p.add_argument("--skip", nargs="*", choices=("env", "train", "ctde"), default=[],
                   help="parts to leave out")
    p.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = p.parse_args(argv)
    check_out(args.out)

    import jax

    from experiments.outputs import machine_info

    t_start = time.perf_counter()
    sizes = DRY if args.dry_run else FULL
    info = machine_info()
    print(f"gpu_suite on {info['backend']}: {', '.join(info['devices'])}; jax {jax.__version__}",
          flush=True)
    if jax.default_backend() == "cpu" and not args.dry_run:
        print("warning: no accelerator found; this run measures the CPU (use --dry-run for a "
              "code-path check)", file=sys.stderr, flush=True)
    env_rows = env_part(sizes, args.dry_run) if "env" not in args.skip else []
    train_rows = trainer_part(sizes, args.dry_run) if "train" not in args.skip else []
    left = args.budget_s - (time.perf_counter() - t_start)
    ctde = (ctde_part(sizes, args.dry_run, left) if "ctde" not in args.skip
            else {"status": "skipped"})
    lines = summary_lines(env_rows, train_rows, ctde)
    total = time.perf_counter() - t_start
    result = {"schema_version": SCHEMA_VERSION, "benchmark": "gpu_suite",
              "dry_run": args.dry_run, "sizes": sizes, "env": env_rows, "trainer": train_rows,
              "ctde": ctde, "summary": lines, "total_wall_s": total,
              "budget_s": args.budget_s, "machine": info}
    path = write_json(result, args.out, "gpu_suite" + ("-dry" if args.dry_run else ""))
    print()
    for line in lines:
        print(line)
    print(f"total {total:.0f} s (budget {args.budget_s:.0f} s); written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
