"""Study: UE mobility — learners trained on data from the static environment (UEs stay where
they were dropped), tested with mobility on.

    python -m experiments.dynamic_users                        # test speeds 1, 10, 30 m/s
    python -m experiments.dynamic_users --speeds 3 30 --learners ctde independent

The behaviour dataset and the training are :mod:`experiments.ctde`'s (static environment:
``mobility`` off; made once, then reused from ``--data-dir``). The same trained policies, and
the baselines, are then evaluated on the same test keys in the static environment and in
environments with ``mobility=True`` at each UE speed of ``--speeds`` (UEs move in a random
direction fixed per episode, reflecting at the borders, and are re-associated every
``reassociation_slots`` slots; the speed also sets the fading's Doppler, as it does in the
static environment at its ``ue_speed_mps``). The networks' shapes do not depend on mobility, so
the trained parameters act unchanged.

Writes the usual files (methods named ``"<test env> / <method>"``, relative scores against the
TDM of the same test environment) and ``dynamic_users.png`` (relative score per test
environment, mean ± 95% CI over seeds). summary.json's ``"sweep"`` holds one row per (test
environment, method) and ``"mobility"``, per learner and mobile environment, the paired per-seed
change of its relative score from the static test and its score gap to the best heuristic of
that environment (``minus_best_heuristic``: the non-oracle baseline of largest score,
``reward_greedy`` or ``full_reuse`` by default; they adapt to any channel by construction).
"""

from __future__ import annotations

import argparse

SPEEDS = {"default": (1.0, 10.0, 30.0), "paper": (1.0, 3.0, 10.0, 30.0), "quick": (10.0,)}


def build_parser() -> argparse.ArgumentParser:
    from experiments.cli import number_in
    from experiments.runner import STUDY_SEEDS, add_study_arguments

    p = argparse.ArgumentParser(
        prog="python -m experiments.dynamic_users",
        description=(
            "Offline learners trained on a dataset of the static environment, tested with UE "
            "mobility on at several speeds, beside the baselines, on the same test keys; score "
            f"= sum + K x 5%-rate, mean ± 95% CI over seeds (default {STUDY_SEEDS} seeds, half "
            "the main job's, to keep the study affordable on a laptop CPU)."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_study_arguments(p)
    p.add_argument("--speeds", nargs="+", type=number_in(0.0, low_open=True), default=None,
                   metavar="M_PER_S",
                   help="UE speeds of the mobile test environments, m/s, each > 0 (when not given: "
                        f"{' '.join(f'{v:g}' for v in SPEEDS['default'])}; --preset paper: "
                        f"{' '.join(f'{v:g}' for v in SPEEDS['paper'])}; --quick: "
                        f"{' '.join(f'{v:g}' for v in SPEEDS['quick'])})")
    return p


def run(args):
    from experiments import cli, outputs, plots, runner, tables
    from jaxrrm.config import check_feasible

    run_ = runner.resolve(args, "dynamic_users")  # first: it may set XLA flags for --quick

    import jax

    from jaxrrm import compare, evaluate, metrics

    if run_.cfg.mobility:
        raise cli.CliError("--env mobility=true: the training environment of this study is "
                              "static; mobility is turned on in its test environments")
    speeds = runner.sweep_values(args, "--speeds", SPEEDS)
    envs = {"static": (run_.cfg, run_.params, None)}
    for v in speeds:
        try:
            mobile_cfg, mobile_params = (run_.cfg.replace(mobility=True),
                                         run_.params.replace(ue_speed_mps=v))
            check_feasible(mobile_params, mobile_cfg)
            envs[f"mobile {v:g} m/s"] = (mobile_cfg, mobile_params, v)
        except ValueError as e:
            raise cli.CliError(f"--speeds {v:g}: {e}") from None
    test_envs = {name: (c, p) for name, (c, p, _) in envs.items()}
    names = list(dict.fromkeys(["tdm"] + list(args.baselines)))
    learner_cfgs = {runner.LEARNERS[n]: run_.learner_config(n) for n in args.learners}

    out = outputs.OutputDir(args.out or outputs.default_out_dir("dynamic_users"),
                            overwrite=args.overwrite)
    try:
        test_keys = evaluate.seed_keys(args.seed, run_.seeds)
        train_key = jax.random.fold_in(jax.random.key(args.seed), 0x0FF1)
        by_env = {name: {} for name in envs}
        for name, (c, p, _) in envs.items():
            for b, res in runner.evaluate_fixed(run_, names, test_keys, c, p).items():
                by_env[name][b] = res
        beh = runner.dataset(run_)
        for method, lc in learner_cfgs.items():
            for name, res in runner.train_learner_envs(run_, method, lc, beh, test_keys,
                                                       train_key, test_envs).items():
                by_env[name][method] = res
        results = {f"{e} / {m}": r for e, ms in by_env.items() for m, r in ms.items()}
        summary = {}
        for e, ms in by_env.items():
            summary.update(compare.summarize({f"{e} / {m}": r for m, r in ms.items()},
                                             f"{e} / tdm"))
        rows = [{"value": e, "test_env": e, "mobility": envs[e][2] is not None,
                 "ue_speed_mps": float(envs[e][1].ue_speed_mps), "method": m,
                 "label": f"{e} / {m}", "kind": "baseline" if m in names else "learner",
                 **runner.stats_of(summary[f"{e} / {m}"])}
                for e, ms in by_env.items() for m in ms]
        mobility = {}
        for method in learner_cfgs:
            entries = []
            for e in list(envs)[1:]:
                entry = {"test_env": e, "ue_speed_mps": envs[e][2],
                         "relative_score_change": metrics.paired_difference(
                             results[f"{e} / {method}"].per_seed["relative_score"],
                             results[f"static / {method}"].per_seed["relative_score"])}
                best = compare.best_heuristic({m: r.per_seed for m, r in by_env[e].items()
                                               if m in names})
                if best is not None:
                    entry["minus_best_heuristic"] = {
                        "baseline": best, **compare.paired(results, f"{e} / {method}",
                                                           f"{e} / {best}")}
                entries.append(entry)
            mobility[method] = entries
        extra = {"sweep": {"parameter": "test environment", "values": list(envs), "rows": rows},
                 "mobility": mobility, "dataset": runner.dataset_info(beh)}
        outputs.write_outputs(out, run_, results, summary, extra_summary=extra,
                              plots=not args.no_plots,
                              extra_config={"study": {"parameter": "ue_speed_mps",
                                                      "values": speeds,
                                                      "test_envs": list(envs)}})
        if not args.no_plots:
            cfg = run_.cfg
            plots.plot_sweep(out.file("dynamic_users.png"), rows,
                             "test environment (trained on the static one)", "relative_score",
                             categorical=True,
                             title=f"{cfg.num_aps} APs, {cfg.num_ues} UEs, {run_.seeds} seeds "
                                   f"x {run_.episodes} episodes")
        path = out.commit()
    except BaseException:
        out.abort()
        raise
    tables.print_table(run_, summary, results, path)
    tables.print_sweep(rows, "test env")
    for method, entries in mobility.items():
        for e in entries:
            d = e["relative_score_change"]
            line = (f"{method} @ {e['test_env']}: relative score {d['mean']:+.3f} ± "
                    f"{d['ci95']:.3f} vs static")
            if "minus_best_heuristic" in e:
                f = e["minus_best_heuristic"]
                line += (f"; minus {f['baseline']} (best heuristic) {f['mean']:+.2f} ± "
                         f"{f['ci95']:.2f} Mbit/s")
            print(line)
    return path


def main(argv=None) -> int:
    from experiments.cli import cli_main

    return cli_main(build_parser, run, argv, interrupted="interrupted: nothing was written")


if __name__ == "__main__":
    from experiments.cli import exit_process

    exit_process(main())
