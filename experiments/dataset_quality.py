"""Study: the same offline learner on datasets of different quality — made by online discrete
SAC, by online DQN and by a random walk (the paper finds SAC > DQN > random walk).

    python -m experiments.dataset_quality                       # sac, dqn, random_walk
    python -m experiments.dataset_quality --behaviours sac random_walk full_reuse

Each behaviour's dataset (same size and seed; sac/dqn trained online first) is made once and
then reused from ``--data-dir``; the learners are trained on each and evaluated, with every
behaviour policy itself (greedy for the online learners) and the baselines, on the same test
episodes. Writes the usual files and ``dataset_quality.png``: score per behaviour dataset (mean ±
95% CI over seeds), the baselines as horizontal bands. summary.json's ``"sweep"`` holds one row
per (behaviour, method), ``"datasets"`` each dataset's path, fingerprint and mean reward, and
``"ranking"`` the behaviours ordered by each learner's score and ``"ranking_test"`` the
paired per-seed score differences between neighbours in that order (:func:`ranking_test`).
"""

from __future__ import annotations

import argparse
import dataclasses

BEHAVIOURS = {"default": ("sac", "dqn", "random_walk"), "paper": ("sac", "dqn", "random_walk"),
              "quick": ("sac", "dqn", "random_walk")}


def build_parser() -> argparse.ArgumentParser:
    from experiments.runner import STUDY_SEEDS, add_study_arguments
    from jaxrrm.behaviour_data import BEHAVIOURS as ALL

    p = argparse.ArgumentParser(
        prog="python -m experiments.dataset_quality",
        description=(
            "The same offline learner trained on datasets made by different behaviour "
            "policies (online SAC, online DQN, random walk, or any baseline), evaluated with "
            "the behaviour policies and the baselines on the same test episodes; score = sum + "
            f"K x 5%-rate, mean ± 95% CI over seeds (default {STUDY_SEEDS} seeds, half the "
            "main job's, to keep the study affordable on a laptop CPU)."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_study_arguments(p, omit=("behaviour",))
    p.add_argument("--behaviours", nargs="+", choices=ALL, default=None, metavar="BEHAVIOUR",
                   help="behaviour policies of the datasets, one dataset each (choices: "
                        f"{', '.join(ALL)}; when not given: {' '.join(BEHAVIOURS['default'])})")
    p.add_argument("--no-behaviour", action="store_true",
                   help="do not evaluate the behaviour policies themselves")
    return p


def ranking_test(per_seed, labels) -> dict:
    """The datasets ranked by mean score, and whether each step of the ranking is significant.

    ``labels`` maps each behaviour to the label of one learner trained on its dataset;
    ``per_seed`` maps a label to its per-seed metrics. All were evaluated on the same test
    episodes, so neighbours in the ranking are compared by the paired per-seed score difference
    (mean ± 95% CI, :func:`metrics.paired_difference`). ``strict`` is true when every
    neighbouring difference is significantly positive.
    """
    from jaxrrm import metrics

    order = sorted(labels, key=lambda b: -float(sum(per_seed[labels[b]]["score"]))
                   / len(per_seed[labels[b]]["score"]))
    steps = [{"better": hi, "worse": lo,
              "score": metrics.paired_difference(per_seed[labels[hi]]["score"],
                                                 per_seed[labels[lo]]["score"])}
             for hi, lo in zip(order[:-1], order[1:])]
    return {"order": order, "steps": steps,
            "strict": all(s["score"]["sign"] == 1 for s in steps)}


def run(args):
    from experiments import plots, runner

    run_ = runner.resolve(args, "dataset_quality")  # first: it may set XLA flags for --quick
    behaviours = runner.sweep_values(args, "--behaviours", BEHAVIOURS)
    variants = [runner.Variant(label=b, value=b, spec=run_.dataset_spec(behaviour=b),
                               evaluate_behaviour=not args.no_behaviour and b not in (
                                   ["tdm"] + list(args.baselines)))
                for b in behaviours]
    run_.spec = variants[0].spec   # config.json's "dataset": the first; "study" has all

    def analyse(results, summary, rows):
        ranking, tests = {}, {}
        for name in args.learners:
            rs = runner.rows_of(rows, runner.LEARNERS[name])
            test = ranking_test({r["label"]: results[r["label"]].per_seed for r in rs},
                                {r["value"]: r["label"] for r in rs})
            ranking[runner.LEARNERS[name]] = test["order"]
            tests[runner.LEARNERS[name]] = test
        return {"ranking": ranking, "ranking_test": tests}

    def plot(out, summary, rows, title):
        refs = {n: summary[n] for n in summary if " / " not in n}
        plots.plot_sweep(out.file("dataset_quality.png"), rows, "behaviour policy of the dataset",
                         "score", refs, categorical=True, title=title)

    path, extra = runner.run_study(args, run_, variants, learners=args.learners,
                                   baselines=args.baselines, sweep_key="sweep",
                                   value_name="behaviour", plot=plot, analyse=analyse,
                                   extra_config={"datasets": [dataclasses.asdict(v.spec)
                                                              for v in variants]})
    for method, test in extra["ranking_test"].items():
        steps = ", ".join(f"{t['better']} - {t['worse']}: {t['score']['mean']:+.1f} ± "
                          f"{t['score']['ci95']:.1f}" for t in test["steps"])
        print(f"{method}: datasets by score: {' > '.join(test['order'])} (paired score "
              f"differences {steps}; {'every step' if test['strict'] else 'not every step'} "
              "significant)")
    return path


def main(argv=None) -> int:
    from experiments.cli import cli_main

    return cli_main(build_parser, run, argv, interrupted="interrupted: nothing was written")


if __name__ == "__main__":
    from experiments.cli import exit_process

    exit_process(main())
