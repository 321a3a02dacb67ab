"""Scaling of rollouts and training over devices (:mod:`jaxrrm.distributed`).

    python -m benchmarks.distributed_scaling                 # CPU: 1, 2, 4 forced host devices
    python -m benchmarks.distributed_scaling --platform gpu  # the machine's GPUs: 1, 2, 4, ...
    python -m benchmarks.distributed_scaling --quick         # smoke run (seconds)

Strong scaling: the same total work on ``D`` devices. Two workloads:

* **rollouts**: :func:`jaxrrm.distributed.rollout_seeds` of the ``full_reuse`` policy, ``--seeds``
  seeds x ``--episodes`` episodes of the default scenario, seeds split over the devices;
  throughput in environment steps per second (one slot of one episode);
* **training**: :meth:`jaxrrm.distributed.ShardedTrainer.run_chunk` of CTDE-CQL (``--hidden``
  networks, 64 x 64 as the main job's CPU preset), ``--train-seeds`` seeds x ``--chunk``
  minibatch updates of ``--batch`` rows on a synthetic dataset (timing only), seeds split over
  the devices; throughput in updates per second summed over seeds.

``D = 1`` is the unsharded library call (what a user runs without flags); ``speedup = t(1) /
t(D)``, ``efficiency = speedup / D``; the CPU time of the process per call is recorded beside
the wall time (``*_cpu_s``): on a shared machine it shows whether sharding costs extra work even
when wall times are skewed by other jobs. On CPU, the host is split into ``D`` XLA devices with
``--xla_force_host_platform_device_count`` (one subprocess per ``D``, since the count is fixed at
start-up): they share the machine's cores, so the speedup cannot exceed the core count (and a
single device already uses several cores for large operations). Compile time is reported apart.
Results go to ``benchmarks/results/distributed_scaling-<timestamp>.json`` with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from experiments.cli import positive_float, positive_int
from benchmarks.harness import check_out, write_json

ROOT = Path(__file__).resolve().parents[1]



def run_worker(args) -> dict:
    """Time both workloads on meshes of ``args.counts`` devices of this process."""
    import jax
    import jax.numpy as jnp

    from benchmarks.harness import time_calls
    from benchmarks.train_throughput import synthetic_dataset
    from jaxrrm import EnvConfig, EnvParams, baselines, data, distributed as dist, evaluate, train
    from jaxrrm.algos import cql
    from jaxrrm.algos.netconfig import NetConfig

    kw = {k: v for k, v in dict(num_aps=args.num_aps, num_ues=args.num_ues,
                                horizon=args.horizon).items() if v is not None}
    cfg = EnvConfig(**kw)
    params = EnvParams.create(cfg)
    pol = baselines.make("full_reuse", cfg)
    rows = []
    for d in args.counts:
        mesh = None if d == 1 else dist.make_mesh(d)
        row = {"devices": d, "platform": jax.default_backend(),
               "device_kind": jax.devices()[0].device_kind,
               # Other work on the machine skews wall times: the load when the point started.
               "load_avg_1min": os.getloadavg()[0]}
        # Rollouts: seeds split over the devices.
        keys = evaluate.seed_keys(0, args.seeds)
        t0 = time.perf_counter()
        jax.block_until_ready(dist.rollout_seeds(keys, pol, params, cfg, args.episodes, mesh))
        row["rollout_first_call_s"] = time.perf_counter() - t0
        counter = iter(range(1, 1 << 30))
        sec, cpu, reps = time_calls(lambda: jax.block_until_ready(dist.rollout_seeds(
            evaluate.seed_keys(next(counter), args.seeds), pol, params, cfg, args.episodes,
            mesh)), args.min_seconds)
        steps = args.seeds * args.episodes * cfg.horizon
        row.update(rollout_s=sec, rollout_cpu_s=cpu, rollout_repeats=reps,
                   rollout_steps_per_s=steps / sec)
        # Training: seeds of a chunk of CQL updates split over the devices.
        tc = train.TrainConfig(num_updates=args.chunk, batch_size=args.batch,
                               chunk_size=args.chunk, num_seeds=args.train_seeds)
        net = NetConfig(hidden=tuple(args.hidden))
        tr = train.make_train(cfg, params, cql.CQLConfig(critic_net=net, actor_net=net), tc)
        ds = synthetic_dataset(cfg, args.dataset_size)
        seed_keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(
            jnp.arange(args.train_seeds))
        if mesh is None:
            init, run_chunk, ds = tr.init, tr.run_chunk, data.to_device(ds)
        else:
            st = dist.shard_trainer(tr, mesh)
            init, run_chunk, ds = st.init, st.run_chunk, dist.put_replicated(ds, mesh)
        state = [init(seed_keys)]
        t0 = time.perf_counter()
        state[0] = jax.block_until_ready(run_chunk(state[0], ds))[0]
        row["train_first_call_s"] = time.perf_counter() - t0

        def chunk():
            state[0] = jax.block_until_ready(run_chunk(state[0], ds))[0]

        sec, cpu, reps = time_calls(chunk, args.min_seconds)
        row.update(train_s=sec, train_cpu_s=cpu, train_repeats=reps,
                   train_updates_per_s=args.chunk * args.train_seeds / sec)
        print(f"D={d}: rollouts {row['rollout_steps_per_s']:12.0f} steps/s, training "
              f"{row['train_updates_per_s']:9.1f} updates/s", file=sys.stderr, flush=True)
        row["load_avg_1min_end"] = os.getloadavg()[0]
        rows.append(row)
    return {"rows": rows, "env": {"num_aps": cfg.num_aps, "num_ues": cfg.num_ues,
                                  "num_candidates": cfg.num_candidates,
                                  "horizon": cfg.horizon}}


def _worker_argv(args, counts):
    argv = ["--worker", "--counts", *map(str, counts), "--seeds", str(args.seeds),
            "--episodes", str(args.episodes), "--train-seeds", str(args.train_seeds),
            "--chunk", str(args.chunk), "--batch", str(args.batch),
            "--dataset-size", str(args.dataset_size), "--min-seconds", str(args.min_seconds),
            "--hidden", *map(str, args.hidden)]
    for name in ("num_aps", "num_ues", "horizon"):
        if getattr(args, name) is not None:
            argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    return argv


def _spawn(args, counts, forced_cpu: int = 0) -> dict:
    env = dict(os.environ)
    if forced_cpu:
        flags = [f for f in env.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_force_host_platform_device_count")]
        env["XLA_FLAGS"] = " ".join(flags + [
            f"--xla_force_host_platform_device_count={forced_cpu}"])
        env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-m", "benchmarks.distributed_scaling",
                          *_worker_argv(args, counts)], env=env, cwd=ROOT, check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.distributed_scaling",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--platform", choices=("cpu", "gpu"), default="cpu",
                   help="cpu: forced host devices, one subprocess per count; gpu: the machine's "
                        "GPUs, meshes over 1, 2, 4, ... of them in one process")
    p.add_argument("--devices", type=positive_int, nargs="+", default=None,
                   help="device counts (default cpu: 1 2 4; gpu: powers of two up to all)")
    p.add_argument("--seeds", type=positive_int, default=8, help="rollout seeds (split over devices)")
    p.add_argument("--episodes", type=positive_int, default=64, help="episodes per rollout seed")
    p.add_argument("--train-seeds", type=positive_int, default=4, help="training seeds (split)")
    p.add_argument("--chunk", type=positive_int, default=100, help="CQL updates per timed chunk")
    p.add_argument("--batch", type=positive_int, default=256, help="minibatch rows per update")
    p.add_argument("--dataset-size", type=positive_int, default=20_000, help="synthetic dataset rows")
    p.add_argument("--hidden", type=positive_int, nargs="+", default=[64, 64],
                   help="hidden widths of the CQL networks (64 64: the main job's CPU preset; "
                        "256 256: its paper preset)")
    p.add_argument("--num-aps", type=positive_int, default=None)
    p.add_argument("--num-ues", type=positive_int, default=None)
    p.add_argument("--horizon", type=positive_int, default=None)
    p.add_argument("--min-seconds", type=positive_float, default=3.0, help="timing window per point")
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    p.add_argument("--out", type=Path, default=None, help="JSON output path")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--counts", type=positive_int, nargs="+", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    check_out(args.out)

    if args.worker:
        print(json.dumps(run_worker(args)))
        return 0
    if args.quick:
        args.horizon = args.horizon or 10
        args.seeds, args.episodes, args.train_seeds = 4, 4, 4
        args.chunk, args.batch, args.dataset_size, args.min_seconds = 5, 32, 512, 0.05
        args.hidden = [16, 16]

    if args.platform == "cpu":  # the parent stays on its one CPU device
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    from experiments.outputs import machine_info

    if args.platform == "cpu":
        counts = args.devices or [1, 2, 4]
        rows = []
        for d in counts:
            res = _spawn(args, [d], forced_cpu=d)
            rows += res["rows"]
    else:  # real devices: every count in this process (the GPUs are not shared with a child)
        if jax.default_backend() != "gpu":
            raise SystemExit(f"--platform gpu: no GPU found (JAX backend "
                             f"{jax.default_backend()!r})")
        n = len(jax.devices())
        args.counts = args.devices or [c for c in (1, 2, 4, 8, 16, 32) if c <= n]
        res = run_worker(args)
        rows = res["rows"]
    base = rows[0]
    for r in rows:
        for w in ("rollout", "train"):
            r[f"{w}_speedup"] = base[f"{w}_s"] / r[f"{w}_s"]
            r[f"{w}_efficiency"] = r[f"{w}_speedup"] / (r["devices"] / base["devices"])
        print(f"D={r['devices']}: rollouts {r['rollout_steps_per_s']:12.0f} steps/s "
              f"(speedup {r['rollout_speedup']:.2f}, efficiency {r['rollout_efficiency']:.2f}); "
              f"training {r['train_updates_per_s']:9.1f} updates/s (speedup "
              f"{r['train_speedup']:.2f}, efficiency {r['train_efficiency']:.2f})", flush=True)
    result = {
        "benchmark": "distributed_scaling", "schema_version": 1, "platform": args.platform,
        "config": {**res["env"], "policy": "full_reuse", "seeds": args.seeds,
                   "episodes_per_seed": args.episodes, "train_seeds": args.train_seeds,
                   "chunk_updates": args.chunk, "batch_size": args.batch,
                   "dataset_size": args.dataset_size, "hidden": list(args.hidden),
                   "learner": "CQLConfig(ctde, sac) with NetConfig(hidden)",
                   "quick": args.quick,
                   "cpu_devices_forced": args.platform == "cpu"},
        "rows": rows, "machine": machine_info(), "jax_version": jax.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out = write_json(result, args.out, "distributed_scaling")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
