"""How cost grows with the number of APs, UEs and candidates (for planning large networks).

    python -m benchmarks.scaling                 # default sweep (a few minutes on 2 cores)
    python -m benchmarks.scaling --tiny          # smoke run

One setting is varied at a time from the default scenario (4 APs x 24 UEs, N = 3 candidates):

* ``num_aps``  (UEs and candidates at the default),
* ``num_ues``  (APs and candidates at the default),
* ``num_candidates`` (APs and UEs at the default).

For each point it measures

* the environment: a jitted ``rollout`` of ``--episodes`` parallel episodes of the ``full_reuse``
  policy, reported as microseconds per environment step (one slot of one episode, all APs) and
  per UE-slot;
* the CTDE-MARL-CQL update: the trainer's compiled chunk (:func:`jaxrrm.train.make_train`, one
  seed, batch 256, the default networks, synthetic data), reported as milliseconds per update.

Compile times are reported apart. Wall and CPU time are both recorded; CPU time (the work done)
is the steadier measure on a shared machine. The power-law exponent of each curve
(least-squares slope in log-log: cost ~ x^slope) is recorded, and a log-log plot written beside
the JSON:
``benchmarks/results/scaling-<timestamp>.{json,png}``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from experiments.cli import positive_float, positive_int
from benchmarks.harness import check_out
from benchmarks.harness import RESULTS_DIR, peak_rss_mib, write_json
from benchmarks.harness import time_calls as _time_calls
from benchmarks.harness import load_avg as _load
from benchmarks.train_throughput import synthetic_dataset

DEFAULT_AXES = {
    "num_aps": [2, 4, 8, 12],
    "num_ues": [12, 24, 48, 96, 192],
    "num_candidates": [1, 2, 3, 6, 12],
}
TINY_AXES = {"num_aps": [2, 3], "num_ues": [6, 12], "num_candidates": [1, 2]}



def env_cost(cfg, episodes: int, min_seconds: float) -> dict:
    """Environment step cost of a jitted ``full_reuse`` rollout of ``episodes`` episodes."""
    import jax

    from jaxrrm import EnvParams, baselines, env

    params = EnvParams.create(cfg)
    policy = baselines.make("full_reuse", cfg)
    fn = jax.jit(lambda k: env.rollout(k, policy, params, cfg, episodes).ue_rates_mbps)
    t0 = time.perf_counter()
    compiled = fn.lower(jax.random.key(0)).compile()
    compile_s = time.perf_counter() - t0
    counter = iter(range(1, 1 << 30))

    def call():
        jax.block_until_ready(compiled(jax.random.key(next(counter))))

    call()
    sec, cpu, n = _time_calls(call, min_seconds, min_calls=2)
    steps = episodes * cfg.horizon
    return {"compile_s": compile_s, "call_s": sec, "calls": n,
            "us_per_step": 1e6 * sec / steps, "us_per_step_cpu": 1e6 * cpu / steps,
            "ns_per_ue_slot": 1e9 * sec / (steps * cfg.num_ues)}


def cql_cost(cfg, lc, batch: int, chunk: int, dataset_rows: int, min_seconds: float) -> dict:
    """Milliseconds per update of the trainer's compiled chunk (one seed)."""
    import jax

    from jaxrrm import EnvParams, data, train

    ds = data.to_device(synthetic_dataset(cfg, dataset_rows))
    tr = train.make_train(cfg, EnvParams.create(cfg), lc,
                          train.TrainConfig(num_updates=chunk, batch_size=batch,
                                            chunk_size=chunk, num_seeds=1))
    state = [tr.init(jax.random.split(jax.random.key(0), 1))]
    t0 = time.perf_counter()
    compiled = tr.run_chunk.lower(state[0], ds).compile()
    compile_s = time.perf_counter() - t0

    def call():
        state[0] = jax.block_until_ready(compiled(state[0], ds)[0])

    call()
    sec, cpu, n = _time_calls(call, min_seconds, min_calls=2)
    return {"compile_s": compile_s, "calls": n, "chunk": chunk,
            "ms_per_update": 1e3 * sec / chunk, "ms_per_update_cpu": 1e3 * cpu / chunk}


def loglog_slope(xs, ys):
    """Least-squares slope of ``log y`` on ``log x`` (None with fewer than 2 valid points)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x and y and x > 0 and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return None if sxx == 0 else sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = list(result["axes"])
    fig, axs = plt.subplots(1, len(axes), figsize=(4.2 * len(axes), 3.6), squeeze=False)
    for ax, name in zip(axs[0], axes):
        rows = [r for r in result["points"] if r["axis"] == name and r.get("status") == "ok"]
        xs = [r["value"] for r in rows]
        # CPU time (the work: robust to other jobs on a shared machine) solid, wall dashed
        series = [("env µs/step, CPU", "env", "us_per_step_cpu", "o-", "C0"),
                  ("env µs/step, wall", "env", "us_per_step", "o--", "C0"),
                  ("CTDE-CQL ms/update, CPU", "cql", "ms_per_update_cpu", "s-", "C1"),
                  ("CTDE-CQL ms/update, wall", "cql", "ms_per_update", "s--", "C1")]
        for label, part, key, style, color in series:
            pts = [(x, r[part][key]) for x, r in zip(xs, rows)
                   if r.get(part) and r[part].get(key)]
            if pts:
                skey = part + ("_cpu" if key.endswith("_cpu") else "")
                slope = result["slopes"].get(name, {}).get(skey)
                lab = label + (f" (slope {slope:.2f})" if slope is not None else "")
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=color,
                        alpha=1.0 if key.endswith("_cpu") else 0.45, label=lab)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(name)
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) for x in xs])
        ax.minorticks_off()
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    d = result["default"]
    fig.suptitle(f"Cost vs size, one setting varied from {d['num_aps']} APs x {d['num_ues']} "
                 f"UEs, N = {d['num_candidates']} ({result['machine']['cpu']}, "
                 f"{result['machine']['cpu_count']} cores, load {result['load_avg_start']:.1f})",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaling",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--axes", nargs="+", choices=sorted(DEFAULT_AXES), default=list(DEFAULT_AXES),
                   help="settings to vary")
    p.add_argument("--values", type=positive_int, nargs="+", default=None,
                   help="values of the (single) varied setting, instead of the preset ones")
    p.add_argument("--episodes", type=positive_int, default=256, help="parallel episodes of the env")
    p.add_argument("--batch", type=positive_int, default=256, help="CQL minibatch rows")
    p.add_argument("--chunk", type=positive_int, default=20, help="CQL updates per compiled call")
    p.add_argument("--seconds", type=positive_float, default=2.0, help="timing window per measurement")
    p.add_argument("--no-cql", action="store_true", help="environment only")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--tiny", action="store_true", help="tiny smoke run (seconds)")
    p.add_argument("--out", type=Path, default=None, help="JSON output path (PNG beside it)")
    args = p.parse_args(argv)
    check_out(args.out)

    import jax

    from experiments.outputs import machine_info
    from jaxrrm import EnvConfig
    from jaxrrm.algos import cql
    from jaxrrm.algos.netconfig import NetConfig

    load_start = _load()
    if args.tiny:
        base = dict(num_aps=2, num_ues=6, num_candidates=2, horizon=10)
        axes = {k: TINY_AXES[k] for k in args.axes}
        net = NetConfig(hidden=(16,), shared=False)
        lc = cql.CQLConfig(paradigm="ctde", critic_net=net, actor_net=net)
        args.episodes, args.batch, args.chunk = min(args.episodes, 4), min(args.batch, 16), 2
        args.seconds = min(args.seconds, 0.05)
    else:
        d = EnvConfig()
        base = dict(num_aps=d.num_aps, num_ues=d.num_ues, num_candidates=d.num_candidates,
                    horizon=d.horizon)
        axes = {k: DEFAULT_AXES[k] for k in args.axes}
        lc = cql.CQLConfig(paradigm="ctde")  # the default networks
    if args.values:
        if len(axes) != 1:
            p.error("--values needs exactly one setting in --axes")
        axes = {name: list(args.values) for name in axes}

    env_cache, cql_cache, points = {}, {}, []
    for name, values in axes.items():
        for v in values:
            kw = dict(base, **{name: v})
            row = {"axis": name, "value": v, **{k: kw[k] for k in
                                                 ("num_aps", "num_ues", "num_candidates")},
                   "load_before": _load()}
            try:
                cfg = EnvConfig(**kw)
            except ValueError as err:
                row.update(status="invalid", error=str(err))
                points.append(row)
                continue
            key = (cfg.num_aps, cfg.num_ues, cfg.num_candidates)
            try:
                if key not in env_cache:
                    env_cache[key] = env_cost(cfg, args.episodes, args.seconds)
                row["env"] = env_cache[key]
                if not args.no_cql:
                    ckey = (cfg.num_aps, cfg.num_candidates)  # the update ignores num_ues
                    if ckey not in cql_cache:
                        cql_cache[ckey] = cql_cost(cfg, lc, args.batch, args.chunk,
                                                   max(10 * args.batch, 1000), args.seconds)
                    row["cql"] = cql_cache[ckey]
                row["status"] = "ok"
            except Exception as err:  # noqa: BLE001 - recorded, the sweep goes on
                row.update(status="error", error=f"{type(err).__name__}: {str(err)[:300]}")
            row["load_after"] = _load()
            points.append(row)
            msg = f"{name}={v:4d}: "
            if "env" in row:
                msg += f"env {row['env']['us_per_step']:8.2f} us/step"
            if "cql" in row:
                msg += f", ctde-cql {row['cql']['ms_per_update']:8.2f} ms/update"
            if row["status"] != "ok":
                msg += f" {row['status']}: {row.get('error', '')[:150]}"
            print(msg + f" (load {_load():.1f})", flush=True)

    slopes = {}
    for name in axes:
        rows = [r for r in points if r["axis"] == name and r["status"] == "ok"]
        xs = [r["value"] for r in rows]
        sl = {"env": loglog_slope(xs, [r["env"]["us_per_step"] for r in rows]),
              "env_cpu": loglog_slope(xs, [r["env"]["us_per_step_cpu"] for r in rows])}
        if not args.no_cql:
            sl["cql"] = loglog_slope(xs, [r["cql"]["ms_per_update"] for r in rows])
            sl["cql_cpu"] = loglog_slope(xs, [r["cql"]["ms_per_update_cpu"] for r in rows])
        slopes[name] = sl

    result = {
        "benchmark": "scaling", "schema_version": 1,
        "config": {"episodes": args.episodes, "batch": args.batch, "chunk": args.chunk,
                   "seconds": args.seconds, "policy": "full_reuse", "horizon": base["horizon"],
                   "cql_paradigm": "ctde", "critic_hidden": list(lc.critic_net.hidden),
                   "tiny": args.tiny, "cql": not args.no_cql},
        "default": base, "axes": axes, "points": points, "slopes": slopes,
        "load_avg_start": load_start, "load_avg_end": _load(),
        "peak_rss_mib": peak_rss_mib(),
        "machine": machine_info(), "jax_version": jax.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out = args.out or RESULTS_DIR / f"scaling-{time.strftime('%Y%m%d-%H%M%S')}.json"
    if not args.no_plot:
        png = Path(out).with_suffix(".png")
        Path(png).parent.mkdir(parents=True, exist_ok=True)
        plot(result, png)
        result["plot"] = png.name
    out = write_json(result, out, "scaling")
    print("slopes (cost ~ x^slope, wall / CPU): " + "; ".join(
        f"{k}: " + ", ".join(f"{part} {v[part]:.2f} / {v[part + '_cpu']:.2f}"
                             for part in ("env", "cql")
                             if v.get(part) is not None and v.get(part + "_cpu") is not None)
        for k, v in slopes.items()))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
