"""Main job: offline multi-agent CQL against the baselines, end to end, over many seeds.

    python -m experiments.ctde --seeds 16

1. makes the behaviour dataset (default: a discrete-SAC learner trained online on the
   vectorized environment, whose last transitions are kept) or reuses it from ``--data-dir``,
   where it is cached under the hash of its full configuration (:mod:`jaxrrm.behaviour_data`);
2. trains C-, I- and CTDE-MARL-CQL and behaviour cloning on it (and QMIX-MARL-CQL when
   ``--learners`` names ``qmix``), all seeds of a learner in one vmapped, scanned run
   (:mod:`jaxrrm.train`), with progress bars showing losses and Q-values;
3. evaluates every learner (greedy, after the last update), the behaviour policy and the
   baselines on the same held-out test episodes of each seed (paired), and reports docs/design.md
   §3's metrics as mean ± 95% CI over seeds, relative score seed by seed against TDM, and every
   method against the best heuristic (the non-oracle baseline of largest mean score on these
   test episodes, :func:`jaxrrm.compare.best_heuristic`): paired score difference and the
   fraction of the exhaustive
   oracle's headroom it captures (``summary.json["versus_best_heuristic"]``).

Outputs (written atomically to ``--out``): ``config.json``, ``summary.json``, ``summary.csv``,
``per_seed.json``, ``learning_curves.json`` and the plots ``rate_cdf.png``, ``sum_vs_tail.png``,
``learning_curves.png``. Learning curves are measured on validation episodes drawn from other
keys than the test episodes; nothing is selected on the test episodes.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    from experiments.runner import MAIN_LEARNERS, add_run_arguments
    from jaxrrm.baselines import NAMES

    p = argparse.ArgumentParser(
        prog="python -m experiments.ctde",
        description=(
            "Offline multi-agent RL for multi-AP scheduling (docs/design.md): make or reuse a "
            "behaviour dataset, train C-, I- and CTDE-MARL-CQL and BC for every seed (vmapped), "
            "and evaluate them beside the behaviour policy and the baselines on the same test "
            "episodes: sum rate, 5th-percentile rate, score = sum + K x 5%%-rate and score "
            "relative to TDM, as mean ± 95%% CI over seeds. Writes config.json, summary.json, "
            "summary.csv, per_seed.json, learning_curves.json and PNG plots to --out."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_run_arguments(p, learners=MAIN_LEARNERS)
    p.add_argument("--baselines", nargs="+", choices=NAMES, default=list(NAMES),
                   help="baselines to evaluate ('tdm' is always added: it is the reference of "
                        "the relative score)")
    p.add_argument("--no-behaviour", action="store_true",
                   help="do not evaluate the behaviour policy itself")
    return p


def run(args) -> Path:
    from experiments import outputs, runner, tables

    run_ = runner.resolve(args, "ctde")  # first: it may set XLA flags for --quick

    import jax

    from jaxrrm import compare, evaluate

    names = list(dict.fromkeys(["tdm"] + list(args.baselines)))
    learner_cfgs = {runner.LEARNERS[n]: run_.learner_config(n) for n in args.learners}
    out = outputs.OutputDir(args.out or outputs.default_out_dir("ctde"), overwrite=args.overwrite)
    try:
        test_keys = evaluate.seed_keys(args.seed, run_.seeds)
        results = runner.evaluate_fixed(run_, names, test_keys)
        beh = runner.dataset(run_)
        if beh.policy is not None and not args.no_behaviour:
            label = f"behaviour ({run_.spec.behaviour})"
            results[label] = compare.evaluate_policy(beh.policy, test_keys, run_.cfg,
                                                     run_.params, run_.episodes, mesh=run_.mesh)
        train_key = jax.random.fold_in(jax.random.key(args.seed), 0x0FF1)
        for label, lc in learner_cfgs.items():
            results[label] = runner.train_learner(run_, label, lc, beh, test_keys, train_key)
        summary = compare.summarize(results, "tdm")
        versus = compare.versus_best_heuristic({n: r.per_seed for n, r in results.items()})
        outputs.write_outputs(out, run_, results, summary, plots=not args.no_plots, extra_summary={
            "versus_best_heuristic": versus,
            "dataset": {"path": str(beh.path), "fingerprint": beh.meta.get("fingerprint"),
                        "built": beh.built, "seconds": beh.seconds,
                        "mean_reward": float(beh.dataset.reward.mean())}})
        path = out.commit()
    except BaseException:
        out.abort()
        raise
    tables.print_table(run_, summary, results, path)
    tables.print_versus(versus)
    return path


def main(argv=None) -> int:
    from experiments.cli import cli_main

    return cli_main(build_parser, run, argv, interrupted="interrupted: nothing was written")


if __name__ == "__main__":
    from experiments.cli import exit_process

    exit_process(main())
