"""Offline-training throughput: CQL updates per second of the JAX trainer against PyTorch.

    python -m benchmarks.train_throughput                        # 1, 16, 64 seeds, 3 paradigms
    python -m benchmarks.train_throughput --seeds 1 16 --paradigms ctde --seconds 5
    python -m benchmarks.train_throughput --tiny                 # smoke run (seconds)
    python -m benchmarks.train_throughput --ctde-e2e             # + wall time of experiments.ctde

For each paradigm and number of seeds ``S`` it builds the real trainer
(:func:`jaxrrm.train.make_train`, default networks, batch 256), compiles one chunk of
``--seed-updates-per-call / S`` updates for ``S`` vmapped seeds (compile time reported apart,
with XLA's own FLOP count of the chunk), and calls it until ``--seconds`` have passed. Reported:
updates per second of each seed (``updates_per_s``), of all seeds together
(``seed_updates_per_s``), updates per CPU-second of the process (less sensitive to other work on
a shared machine) and the cost of ``S`` seeds relative to one (``cost_vs_1_seed``: wall time of
one update of all ``S`` seeds over that of one seed; 1.0 = seeds are free, ``S`` = no gain).

In the same run the same update in PyTorch (:mod:`benchmarks.torch_cql`: same networks, losses,
optimizers and batch, starting from the same weights) runs one seed, with 1 thread and with
one thread per core (``OMP_WAIT_POLICY=PASSIVE`` unless set: with OpenMP's default busy-waiting
two threads on a loaded 2-core machine run ~10x slower than one), in its batched ("vectorized")
and per-network ("loop") layouts. The headline ratio is the JAX trainer's one-seed rate over the
*best* PyTorch rate. Skipped (recorded as such) when torch is not installed: ``pip install -e
'.[bench]'``.

The dataset is synthetic by default (random observations, random masks with idle always valid,
valid random actions): an update's cost does not depend on the values. ``--dataset DIR`` uses
a saved one instead. ``--ctde-e2e`` also times ``python -m experiments.ctde --no-plots
--no-progress`` end to end in a subprocess (default flags, an empty data directory: the
behaviour dataset is made inside the timed run, as on a fresh machine).

Results: ``benchmarks/results/train_throughput-<timestamp>.json`` (machine, load averages, JAX
and torch versions, commit); ``python -m benchmarks.report`` renders them.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from experiments.cli import positive_float, positive_int
from benchmarks.harness import check_out, write_json
from benchmarks.harness import load_avg as _load

PARADIGMS = ("centralized", "independent", "ctde")


# --------------------------------------------------------------------------------------------
# Data and FLOP model
# --------------------------------------------------------------------------------------------


def synthetic_dataset(cfg, n: int, seed: int = 0):
    """``n`` random transitions shaped for ``cfg`` (NumPy leaves): normal observations, random
    masks (each candidate valid with probability 0.8, idle always valid), valid random actions,
    normal rewards, a truncation every ``horizon`` rows."""
    import numpy as np

    from jaxrrm.data import Transitions

    rng = np.random.default_rng(seed)
    i, a, d, k = cfg.num_aps, cfg.num_actions, cfg.obs_dim, cfg.num_ues
    obs = rng.normal(size=(n, i, d)).astype(np.float32)
    nobs = rng.normal(size=(n, i, d)).astype(np.float32)
    mask, nmask = rng.random((2, n, i, a)) < 0.8
    if cfg.allow_idle:
        mask[..., cfg.idle_action] = nmask[..., cfg.idle_action] = True
    else:
        mask[..., 0] = nmask[..., 0] = True
    acts = np.argmax(np.where(mask, rng.random((n, i, a)), -1.0), axis=-1).astype(np.int32)
    t = (np.arange(n) % cfg.horizon).astype(np.int32)
    return Transitions(
        obs=obs, state=obs.reshape(n, -1), action_mask=mask, actions=acts,
        reward=rng.normal(size=(n,)).astype(np.float32), next_obs=nobs,
        next_state=nobs.reshape(n, -1), next_action_mask=nmask,
        terminated=np.zeros((n,), bool), truncated=t == cfg.horizon - 1,
        rates_mbps=np.zeros((n, k), np.float32), episode=(np.arange(n) // cfg.horizon
                                                          ).astype(np.int32), t=t)


def mlp_macs(d_in: int, hidden, out: int) -> int:
    sizes = [d_in, *hidden, out]
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def flop_model(env_cfg, lc, batch: int) -> dict:
    """Analytic matmul FLOPs of one CQL (SAC) update: ``R`` network rows per pass (``B`` or
    ``B * I``), ``m`` multiply-adds per row; critic forward on ``s`` (K), backward (2x), target
    forward on ``s'`` (K), actor forward on ``s'``, actor forward and backward on ``s`` (3x):
    ``2 * 4 R (K m_critic + m_actor)``. Element-wise work is not counted."""
    central = lc.paradigm == "centralized"

    def per_row(net):
        if central:
            return mlp_macs(env_cfg.state_dim, net.hidden, env_cfg.num_joint_actions)
        d = env_cfg.obs_dim + (env_cfg.num_aps if net.shared and net.agent_id else 0)
        return mlp_macs(d, net.hidden, env_cfg.num_actions)

    rows = batch * (1 if central else env_cfg.num_aps)
    k = lc.num_critics
    mc, ma = per_row(lc.critic_net), per_row(lc.actor_net)
    flops = 2 * 4 * rows * (k * mc + ma)
    return {"rows_per_pass": rows, "critic_macs_per_row": mc, "actor_macs_per_row": ma,
            "flops_per_update": flops}


def xla_update_flops(env_cfg, lc, batch: int):
    """XLA's FLOP count (``cost_analysis``) of one compiled learner update on ``batch`` rows
    (matmuls and element-wise work), or None where the backend does not report it. (The count
    of a compiled chunk is not used: XLA counts a ``scan`` body once, whatever its length.)"""
    import jax

    from jaxrrm import data
    from jaxrrm.algos import cql

    try:
        learner = cql.make_learner(env_cfg, lc)
        state = learner.init(jax.random.key(0))
        tr = data.to_device(synthetic_dataset(env_cfg, batch, seed=1))
        cost = jax.jit(learner.update).lower(state, tr, jax.random.key(1)).compile(
            ).cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost["flops"])
    except Exception:  # noqa: BLE001 - optional diagnostic
        return None


def matmul_gflops(seconds: float = 1.0) -> dict:
    """Achieved GFLOP/s of plain float32 matmuls in JAX (jit) and, if installed, PyTorch, per
    wall second and per CPU-second of the process (``*_cpu``: less sensitive to other work on
    the machine; with ``c`` cores busy it can reach ``c`` times one core's rate). Shapes: the
    hidden layer of the default per-AP networks as one batched matmul ([8, 256, 256] @ [8, 256,
    256]: K x I members, batch 256) and one square 2048 matmul (near the CPU's peak)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    shapes = {"bmm_8x256x256x256": ((8, 256, 256), (8, 256, 256)),
              "mm_2048": ((2048, 2048), (2048, 2048))}
    impls = []
    f = jax.jit(jnp.matmul)
    impls.append(("jax", lambda a, b: jax.block_until_ready(f(a, b)),
                  lambda x: jnp.asarray(x, jnp.float32)))
    try:
        import torch

        impls.append(("torch", torch.matmul, lambda x: torch.from_numpy(x.astype(np.float32))))
    except ImportError:
        pass
    out = {}
    for lib, mm, conv in impls:
        for name, (sa, sb) in shapes.items():
            rng = np.random.default_rng(0)
            a, b = conv(rng.normal(size=sa)), conv(rng.normal(size=sb))
            flops = 2 * int(np.prod(sa)) * sb[-1]
            mm(a, b)
            n, t0, c0 = 0, time.perf_counter(), time.process_time()
            while time.perf_counter() - t0 < seconds or n < 3:
                mm(a, b)
                n += 1
            out[f"{lib}_{name}"] = flops * n / (time.perf_counter() - t0) / 1e9
            out[f"{lib}_{name}_cpu"] = flops * n / max(time.process_time() - c0, 1e-9) / 1e9
    return out


# --------------------------------------------------------------------------------------------
# JAX trainer
# --------------------------------------------------------------------------------------------

def _is_oom(err: BaseException) -> bool:
    s = f"{type(err).__name__}: {err}"
    return isinstance(err, MemoryError) or "RESOURCE_EXHAUSTED" in s or "out of memory" in s


def bench_jax(env_cfg, env_params, lc, dataset, num_seeds: int, batch: int, chunk: int,
              seconds: float) -> dict:
    """Compile and time the trainer's chunk for ``num_seeds`` vmapped seeds."""
    import jax

    from jaxrrm import train

    row = {"paradigm": lc.paradigm, "seeds": num_seeds, "chunk": chunk, "batch": batch,
           "load_before": _load()}
    try:
        tc = train.TrainConfig(num_updates=chunk, batch_size=batch, chunk_size=chunk,
                               num_seeds=num_seeds)
        tr = train.make_train(env_cfg, env_params, lc, tc)
        state = jax.block_until_ready(tr.init(jax.random.split(jax.random.key(0), num_seeds)))
        t0 = time.perf_counter()
        compiled = tr.run_chunk.lower(state, dataset).compile()
        row["compile_s"] = time.perf_counter() - t0
        try:
            mem = compiled.memory_analysis()
            row["xla_temp_bytes"] = int(getattr(mem, "temp_size_in_bytes", 0))
        except Exception:  # noqa: BLE001
            row["xla_temp_bytes"] = None
        t0 = time.perf_counter()
        state, _ = compiled(state, dataset)
        jax.block_until_ready(state)
        row["first_call_s"] = time.perf_counter() - t0
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        while True:
            state, _ = compiled(state, dataset)
            jax.block_until_ready(state)
            n += 1
            wall = time.perf_counter() - t0
            if wall >= seconds and n >= 2:
                break
        cpu = time.process_time() - c0
        ups = n * chunk / wall
        row.update(calls=n, wall_s=wall, cpu_s=cpu, updates_per_s=ups,
                   seed_updates_per_s=ups * num_seeds,
                   updates_per_cpu_s=n * chunk / cpu,
                   seed_updates_per_cpu_s=n * chunk * num_seeds / cpu,
                   ms_per_call=1e3 * wall / n, load_after=_load(), status="ok")
    except Exception as err:  # noqa: BLE001 - recorded, the run goes on
        row.update(status="out_of_memory" if _is_oom(err) else "error",
                   error=f"{type(err).__name__}: {str(err)[:500]}", load_after=_load())
    return row


# --------------------------------------------------------------------------------------------
# PyTorch reference
# --------------------------------------------------------------------------------------------

def bench_torch(env_cfg, lc, jax_params, dataset, batch: int, threads: int, style: str,
                seconds: float, compile_losses: bool = False) -> dict:
    """One seed of :class:`benchmarks.torch_cql.TorchCQL`: sample + update per step, timed."""
    import torch

    from benchmarks import torch_cql

    row = {"paradigm": lc.paradigm, "threads": threads, "style": style,
           "compiled": compile_losses, "batch": batch, "load_before": _load()}
    prev = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        learner = torch_cql.TorchCQL(env_cfg, lc, style=style, jax_params=jax_params)
        if compile_losses:
            learner.losses = torch.compile(learner.losses)
        data = torch_cql.to_torch(dataset)
        gen = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        for _ in range(3):
            learner.update(torch_cql.sample(data, batch, gen))
        row["warmup_s"] = time.perf_counter() - t0
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        while True:
            learner.update(torch_cql.sample(data, batch, gen))
            n += 1
            wall = time.perf_counter() - t0
            if wall >= seconds and n >= 3:
                break
        cpu = time.process_time() - c0
        row.update(updates=n, wall_s=wall, cpu_s=cpu, updates_per_s=n / wall,
                   updates_per_cpu_s=n / cpu, load_after=_load(), status="ok")
    except Exception as err:  # noqa: BLE001
        row.update(status="error", error=f"{type(err).__name__}: {str(err)[:500]}",
                   load_after=_load())
    finally:
        torch.set_num_threads(prev)
    return row


# --------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------

def time_ctde_e2e(extra_args=(), timeout: float | None = None) -> dict:
    """Wall and CPU time of ``python -m experiments.ctde --no-plots --no-progress --out <tmp>``
    (default flags otherwise) in a subprocess, with an empty ``--data-dir`` (the behaviour
    dataset is made inside the timed run, as on a fresh machine) unless ``extra_args`` names
    one."""
    with tempfile.TemporaryDirectory(prefix="ctde-e2e-") as tmp:
        out_dir = Path(tmp) / "run"
        extra_args = list(extra_args)
        # As on a fresh machine: the behaviour dataset is made inside the timed run, in an
        # empty data directory, unless the caller passes its own --data-dir to reuse a cache.
        fresh = "--data-dir" not in extra_args
        if fresh:
            extra_args += ["--data-dir", str(Path(tmp) / "data")]
        cmd = [sys.executable, "-m", "experiments.ctde", "--no-plots", "--no-progress",
               "--out", str(out_dir), *extra_args]
        row = {"command": " ".join(cmd[1:]), "load_before": _load(),
               "dataset_made_in_run": fresh}
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  cwd=Path(__file__).resolve().parent.parent)
            row.update(returncode=proc.returncode, output_tail=(proc.stdout + proc.stderr)[-2000:])
        except subprocess.TimeoutExpired as err:
            row.update(returncode=None, error=f"timed out after {err.timeout} s")
        row["wall_s"] = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        row["cpu_s"] = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        row["peak_rss_mib"] = ru1.ru_maxrss / 1024
        row["load_after"] = _load()
        row["status"] = "ok" if row.get("returncode") == 0 else "error"
    return row


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.train_throughput",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seeds", type=positive_int, nargs="+", default=[1, 16, 64],
                   help="numbers of seeds vmapped in one call")
    p.add_argument("--paradigms", nargs="*", choices=PARADIGMS, default=list(PARADIGMS),
                   help="paradigms to time (none: only --ctde-e2e)")
    p.add_argument("--seconds", type=positive_float, default=8.0, help="timing window per point")
    p.add_argument("--batch", type=positive_int, default=256, help="minibatch rows per update")
    p.add_argument("--hidden", type=positive_int, nargs="+", default=None,
                   help="hidden widths of critics and actor (default: CQL's, 256 256)")
    p.add_argument("--seed-updates-per-call", type=positive_int, default=256,
                   help="chunk size x seeds of one compiled call (chunk = this / seeds, >= 1)")
    p.add_argument("--dataset-size", type=positive_int, default=100_000,
                   help="rows of the synthetic dataset")
    p.add_argument("--dataset", type=Path, default=None,
                   help="a saved dataset directory to sample from instead (its config is used)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    p.add_argument("--torch-threads", type=positive_int, nargs="+", default=None,
                   help="torch thread counts to try (default: 1 and the core count)")
    p.add_argument("--torch-styles", nargs="+", choices=("vectorized", "loop"),
                   default=["vectorized", "loop"])
    p.add_argument("--torch-compile", action="store_true",
                   help="also time PyTorch with torch.compile on the loss function")
    p.add_argument("--ctde-e2e", action="store_true",
                   help="also time `python -m experiments.ctde` end to end (default flags)")
    p.add_argument("--ctde-e2e-args", nargs=argparse.REMAINDER, default=[],
                   help="extra arguments for experiments.ctde (must come last)")
    p.add_argument("--no-matmul", action="store_true", help="skip the matmul GFLOP/s probe")
    p.add_argument("--tiny", action="store_true", help="tiny smoke run (seconds)")
    p.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = p.parse_args(argv)
    check_out(args.out)

    # Before torch (libgomp) is loaded: OpenMP's default busy-waiting collapses on a shared
    # machine (see the module docstring). Recorded in the results.
    omp_policy = os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    import jax

    from experiments.outputs import machine_info
    from jaxrrm import EnvConfig, EnvParams, data
    from jaxrrm.algos import cql
    from jaxrrm.algos.netconfig import NetConfig

    load_start = _load()
    if args.tiny:
        env_cfg = EnvConfig(num_aps=2, num_ues=6, num_candidates=2, horizon=20)
        net = NetConfig(hidden=(16,), shared=False)
        lc_base = cql.CQLConfig(critic_net=net, actor_net=net)
        if args.seeds == p.get_default("seeds"):
            args.seeds = [1, 2]
        args.seconds = min(args.seconds, 0.2)
        args.batch = min(args.batch, 32)
        args.dataset_size = min(args.dataset_size, 1000)
        args.seed_updates_per_call = min(args.seed_updates_per_call, 8)
        args.torch_threads = args.torch_threads or [1]
        args.torch_styles = args.torch_styles[:1]
    else:
        lc_base = cql.CQLConfig()  # the default networks
        env_cfg = EnvConfig()
    if args.hidden:
        net = lc_base.critic_net.__class__(**{**lc_base.critic_net.__dict__,
                                              "hidden": tuple(args.hidden)})
        lc_base = lc_base.replace(critic_net=net, actor_net=net)
    if args.dataset is not None:
        ds_np, meta = data.load(args.dataset)
        env_cfg = data.config_from_meta(meta)
        dataset_desc = str(args.dataset)
    else:
        ds_np = synthetic_dataset(env_cfg, args.dataset_size)
        dataset_desc = f"synthetic, {args.dataset_size} rows"
    env_params = EnvParams.create(env_cfg)
    dataset = data.to_device(ds_np)

    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch, torch_version = None, None
    run_torch = torch is not None and not args.no_torch
    ncpu = os.cpu_count() or 1
    threads = args.torch_threads or sorted({1, ncpu})

    matmul = {} if args.no_matmul or args.tiny else matmul_gflops()
    for k, v in matmul.items():
        print(f"matmul {k}: {v:.1f} GFLOP/s", flush=True)

    rows_jax, rows_torch, summary = [], [], []
    for paradigm in args.paradigms:
        lc = lc_base.replace(paradigm=paradigm)
        fm = flop_model(env_cfg, lc, args.batch)
        fm["xla_flops_per_update"] = (None if args.tiny  # (saves a compilation)
                                      else xla_update_flops(env_cfg, lc, args.batch))
        jrows = {}
        for s in args.seeds:
            chunk = max(1, args.seed_updates_per_call // s)
            r = bench_jax(env_cfg, env_params, lc, dataset, s, args.batch, chunk, args.seconds)
            r["model_flops_per_update"] = fm["flops_per_update"]
            if r["status"] == "ok":
                r["model_gflops_per_s"] = fm["flops_per_update"] * r["seed_updates_per_s"] / 1e9
                if fm["xla_flops_per_update"]:
                    r["xla_gflops_per_s"] = (fm["xla_flops_per_update"]
                                             * r["seed_updates_per_s"] / 1e9)
                print(f"jax   {paradigm:12s} S={s:3d}: {r['updates_per_s']:8.1f} updates/s "
                      f"({r['seed_updates_per_s']:8.1f} seed-updates/s, "
                      f"{r['seed_updates_per_cpu_s']:7.1f} per CPU-s), compile "
                      f"{r['compile_s']:.1f} s, {r['model_gflops_per_s']:.1f} GFLOP/s, "
                      f"load {r['load_after']:.2f}", flush=True)
            else:
                print(f"jax   {paradigm:12s} S={s:3d}: {r['status']}: {r['error'][:200]}",
                      flush=True)
            rows_jax.append(r)
            jrows[s] = r
        one = jrows.get(1)
        if one is not None and one["status"] == "ok":
            for s, r in jrows.items():
                if r["status"] == "ok":
                    r["cost_vs_1_seed"] = (s / r["seed_updates_per_s"]) / (1 / one["updates_per_s"])
                    r["cpu_cost_vs_1_seed"] = ((s / r["seed_updates_per_cpu_s"])
                                               / (1 / one["updates_per_cpu_s"]))
        trows = []
        if run_torch:
            from jaxrrm.algos import cql as cql_mod

            params0 = jax.device_get(cql_mod.make_learner(env_cfg, lc).init(
                jax.random.key(0)).params)
            variants = [(t, st, False) for st in args.torch_styles for t in threads]
            if args.torch_compile:
                variants += [(t, "vectorized", True) for t in threads]
            for t, style, comp in variants:
                r = bench_torch(env_cfg, lc, params0, ds_np, args.batch, t, style, args.seconds,
                                comp)
                rows_torch.append(r)
                trows.append(r)
                if r["status"] == "ok":
                    print(f"torch {paradigm:12s} {style:10s} threads={t}"
                          f"{' compiled' if comp else ''}: {r['updates_per_s']:8.1f} updates/s "
                          f"({r['updates_per_cpu_s']:7.1f} per CPU-s), load "
                          f"{r['load_after']:.2f}", flush=True)
                else:
                    print(f"torch {paradigm:12s} {style} threads={t}: {r['error'][:200]}",
                          flush=True)
        ok_t = [r for r in trows if r["status"] == "ok"]
        best = max(ok_t, key=lambda r: r["updates_per_s"]) if ok_t else None
        best_cpu = max(ok_t, key=lambda r: r["updates_per_cpu_s"]) if ok_t else None
        srow = {"paradigm": paradigm, **fm}
        for s, r in jrows.items():
            if r["status"] != "ok":
                continue
            srow[f"jax_{s}_seed_updates_per_s"] = r["seed_updates_per_s"]
            if "cost_vs_1_seed" in r:
                srow[f"cost_{s}_seeds_vs_1"] = r["cost_vs_1_seed"]
            if best is not None:
                # S seeds in one JAX call against PyTorch running them one after the other
                srow[f"ratio_{s}_seeds_vs_torch"] = r["seed_updates_per_s"] / best["updates_per_s"]
                srow[f"ratio_{s}_seeds_vs_torch_cpu"] = (r["seed_updates_per_cpu_s"]
                                                         / best_cpu["updates_per_cpu_s"])
        if best is not None:
            srow.update(torch_best_updates_per_s=best["updates_per_s"],
                        torch_best_threads=best["threads"], torch_best_style=best["style"],
                        torch_best_compiled=best["compiled"],
                        torch_best_updates_per_cpu_s=best_cpu["updates_per_cpu_s"],
                        # the CPU-time ratios are against the best variant *per CPU-second*,
                        # which need not be the fastest by wall time
                        torch_best_cpu_threads=best_cpu["threads"],
                        torch_best_cpu_style=best_cpu["style"])
            if "ratio_1_seeds_vs_torch" in srow:
                print(f"ratio {paradigm}: JAX 1 seed / best PyTorch = "
                      f"{srow['ratio_1_seeds_vs_torch']:.2f}x (CPU-time "
                      f"{srow['ratio_1_seeds_vs_torch_cpu']:.2f}x)", flush=True)
        summary.append(srow)

    e2e = None
    if args.ctde_e2e:
        print("timing python -m experiments.ctde end to end ...", flush=True)
        e2e = time_ctde_e2e(args.ctde_e2e_args)
        print(f"experiments.ctde: {e2e['status']}, {e2e['wall_s']:.1f} s wall, "
              f"{e2e['cpu_s']:.1f} s CPU", flush=True)

    result = {
        "benchmark": "train_throughput", "schema_version": 1,
        "config": {"num_aps": env_cfg.num_aps, "num_ues": env_cfg.num_ues,
                   "num_candidates": env_cfg.num_candidates,
                   "num_actions": env_cfg.num_actions,
                   "num_joint_actions": env_cfg.num_joint_actions,
                   "batch": args.batch, "seeds": args.seeds, "paradigms": args.paradigms,
                   "seconds": args.seconds, "seed_updates_per_call": args.seed_updates_per_call,
                   "critic_hidden": list(lc_base.critic_net.hidden),
                   "actor_hidden": list(lc_base.actor_net.hidden),
                   "shared": lc_base.critic_net.shared, "num_critics": lc_base.num_critics,
                   "dataset": dataset_desc, "tiny": args.tiny,
                   "torch_threads": threads if run_torch else [],
                   "torch_styles": args.torch_styles if run_torch else [],
                   "omp_wait_policy": omp_policy},
        "jax": rows_jax, "torch": rows_torch, "summary": summary, "matmul_gflops": matmul,
        "ctde_e2e": e2e,
        "torch_skipped": None if run_torch else ("--no-torch" if torch is not None
                                                 else "torch not installed"),
        "load_avg_start": load_start, "load_avg_end": _load(),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "machine": machine_info(), "jax_version": jax.__version__,
        "torch_version": torch_version, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out = write_json(result, args.out, "train_throughput")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
