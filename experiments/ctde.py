"""Main job: evaluate the schedulers of DESIGN.md §4 over many seeds and write tables and plots.

    python -m experiments.ctde --seeds 16

Every method is evaluated on the same evaluation episodes of each seed (paired comparison; TDM's
score of the same seed is the reference of the relative score). Metrics are DESIGN §3's, reported
as mean ± 95% CI over seeds.

Status: the offline learners (C-, I-, CTDE-MARL-CQL, BC) and the behaviour dataset arrive with the
CQL trainer (issue 4); until then this job evaluates the five baselines, and its command line and
output format stay what they will be.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

PRESETS = {
    # seeds x episodes per seed (x horizon from the config)
    "default": dict(episodes=64),
    "paper": dict(episodes=512),
}
QUICK = dict(seeds=2, episodes=8, horizon=50)


def build_parser() -> argparse.ArgumentParser:
    from experiments.common import add_env_argument, positive_int
    from jaxrrm.baselines import NAMES

    p = argparse.ArgumentParser(
        prog="python -m experiments.ctde",
        description=(
            "Evaluate multi-AP schedulers on the jaxrrm simulator (DESIGN.md): per method the sum "
            "rate, 5th-percentile rate, score = sum + K * 5%-rate and score relative to TDM, as "
            "mean ± 95%% CI over seeds. Writes config.json, summary.json, summary.csv, "
            "per_seed.json and PNG plots to --out. The offline CQL learners join this table "
            "when the trainer lands; today it evaluates the baselines."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seeds", type=positive_int, default=16,
                   help="independent evaluation seeds (each: its own set of episodes)")
    p.add_argument("--episodes", type=positive_int, default=None,
                   help="evaluation episodes per seed (default: from --preset)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="default",
                   help="'default' finishes on a 2-core laptop CPU in a few minutes; 'paper' is "
                        "the larger study meant for a GPU")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {QUICK['seeds']} seeds x {QUICK['episodes']} episodes of "
                        f"{QUICK['horizon']} slots (overrides --seeds, --episodes, horizon)")
    p.add_argument("--methods", nargs="+", choices=NAMES, default=list(NAMES),
                   help="which baselines to evaluate ('tdm' is always added: it is the reference "
                        "of the relative score)")
    add_env_argument(p)
    p.add_argument("--seed", type=int, default=0, help="base PRNG seed of the run")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default: results/ctde/<timestamp>); must not exist")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out directory")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def run(args) -> Path:
    import jax
    import numpy as np

    from experiments import common
    from jaxrrm import baselines, evaluate

    episodes = args.episodes or PRESETS[args.preset]["episodes"]
    seeds = args.seeds
    quick_cfg = {}
    if args.quick:
        seeds, episodes = QUICK["seeds"], QUICK["episodes"]
        quick_cfg["horizon"] = QUICK["horizon"]
    cfg, params = common.make_env(args.env, **quick_cfg)
    methods = list(dict.fromkeys(["tdm"] + list(args.methods)))
    for name in methods:  # fail before any work on an impossible combination
        try:
            baselines.make(name, cfg)
        except ValueError as e:
            raise common.CliError(str(e)) from None

    out = common.OutputDir(args.out or common.default_out_dir("ctde"), overwrite=args.overwrite)
    try:
        keys = evaluate.seed_keys(args.seed, seeds)
        mu = float(params.score_mu)
        per_seed, ue_rates, returns, timing = {}, {}, {}, {}
        bar = common.progress(methods, "evaluating", enabled=not args.no_progress)
        for name in bar:
            bar.set_postfix_str(name)
            t0 = time.perf_counter()
            rates, ret = evaluate.rollout_seeds(keys, baselines.make(name, cfg), params, cfg,
                                                episodes)
            rates = jax.block_until_ready(rates)
            timing[name] = time.perf_counter() - t0
            per_seed[name] = evaluate.seed_metrics(rates, mu)
            ue_rates[name] = np.asarray(rates)
            returns[name] = np.asarray(ret, np.float64)
        evaluate.add_relative(per_seed, "tdm")
        summary = {name: evaluate.summarize(per_seed[name]) for name in methods}
        for name in methods:
            summary[name]["return"] = dict(zip(("mean", "ci95"),
                                               evaluate.metrics.mean_ci95(returns[name])))

        info = common.machine_info()
        run_cfg = {"schema_version": common.SCHEMA_VERSION, "experiment": "ctde",
                   "argv": sys.argv[1:], "seeds": seeds, "episodes_per_seed": episodes,
                   "seed": args.seed, "methods": methods, "env_config": dataclasses.asdict(cfg),
                   "env_params": {f.name: float(getattr(params, f.name))
                                  for f in dataclasses.fields(params)},
                   "machine": info}
        out.write_json("config.json", run_cfg)
        out.write_json("summary.json", {
            "schema_version": common.SCHEMA_VERSION, "seeds": seeds,
            "episodes_per_seed": episodes, "score_mu": mu, "methods": summary,
            "eval_seconds": timing, "machine": info,
            "note": "offline CQL learners not yet part of this job (trainer pending)"})
        out.write_json("per_seed.json", {name: {k: v.tolist() for k, v in m.items()}
                                         for name, m in per_seed.items()})
        common.write_summary_csv(out.file("summary.csv"), summary)
        if not args.no_plots:
            title = f"{cfg.num_aps} APs, {cfg.num_ues} UEs, {seeds}x{episodes} episodes"
            common.plot_rate_cdf(out.file("rate_cdf.png"), ue_rates, title)
            common.plot_sum_vs_tail(out.file("sum_vs_tail.png"), summary, title)
        path = out.commit()
    except BaseException:
        out.abort()
        raise

    extra = {n: {"eval time [s]": f"{timing[n]:.1f}"} for n in methods}
    print()
    print(f"{cfg.num_aps} APs x {cfg.num_ues} UEs, N={cfg.num_candidates}, T={cfg.horizon}, "
          f"{seeds} seeds x {episodes} episodes, score = sum + {mu:g} x 5%-rate "
          f"(mean ± 95% CI over seeds); {info['cpu']}, JAX {info['jax']} ({info['backend']})")
    print(common.format_table(summary, extra))
    print(f"\nwritten to {path}")
    return path


def main(argv=None) -> int:
    from experiments.common import cli_main

    return cli_main(build_parser, run, argv, interrupted="interrupted: nothing was written")


if __name__ == "__main__":
    sys.exit(main())
