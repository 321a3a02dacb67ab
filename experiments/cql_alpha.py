"""Study: sensitivity of the offline learner to the CQL weight α, including α = 0 (plain
offline SAC, no conservatism).

    python -m experiments.cql_alpha                      # α ∈ {0, 0.1, 0.5, 1, 2, 5}, CTDE
    python -m experiments.cql_alpha --alphas 0 1 10 --learners ctde centralized

One behaviour dataset (as :mod:`experiments.ctde`'s: made once, then reused from ``--data-dir``)
is shared by every α; for each α the learners are trained over all seeds (vmapped) and evaluated
with the baselines on the same test episodes. Writes the usual files (config.json,
summary.json, summary.csv, per_seed.json, learning_curves.json, plots) and ``cql_alpha.png``:
score against α (mean ± 95% CI over seeds), the baselines as horizontal bands. summary.json's
``"sweep"`` holds one row per (α, learner); ``"alpha"`` says which α scored best and how
α = 0 compares with it (paired over seeds).
"""

from __future__ import annotations

import argparse

#: Default α values per preset.
ALPHAS = {"default": (0.0, 0.1, 0.5, 1.0, 2.0, 5.0), "paper": (0.0, 0.1, 0.5, 1.0, 2.0, 5.0),
          "quick": (0.0, 1.0)}


def build_parser() -> argparse.ArgumentParser:
    from experiments.cli import number_in
    from experiments.runner import MAX_CQL_ALPHA, STUDY_SEEDS, add_study_arguments

    p = argparse.ArgumentParser(
        prog="python -m experiments.cql_alpha",
        description=(
            "Sensitivity of offline multi-agent CQL to the weight α of its conservative "
            "penalty (α = 0: plain offline SAC): one behaviour dataset, the learners trained "
            "for every α, evaluated with the baselines on the same test episodes; score = sum + "
            f"K x 5%-rate, mean ± 95% CI over seeds (default {STUDY_SEEDS} seeds, half the "
            "main job's, to keep the sweep affordable on a laptop CPU)."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_study_arguments(p, omit=("cql_alpha",), learner_choices=("ctde", "independent",
                                                                "centralized"))
    p.add_argument("--alphas", nargs="+", type=number_in(0.0, MAX_CQL_ALPHA), default=None,
                   metavar="ALPHA",
                   help="CQL weights to sweep, each >= 0 (when not given: "
                        f"{' '.join(f'{a:g}' for a in ALPHAS['default'])}; --quick: "
                        f"{' '.join(f'{a:g}' for a in ALPHAS['quick'])})")
    return p


def run(args):
    from experiments import plots, runner, tables
    from jaxrrm import compare

    run_ = runner.resolve(args, "cql_alpha")  # first: it may set XLA flags for --quick
    alphas = runner.sweep_values(args, "--alphas", ALPHAS)
    variants = [runner.Variant(label=f"alpha={a:g}", value=a,
                               learner_overrides={"cql_alpha": a}) for a in alphas]
    for name in args.learners:  # fail before any work on a bad combination
        run_.learner_config(name, cql_alpha=alphas[0])

    def analyse(results, summary, rows):
        out = {}
        for name in args.learners:
            method = runner.LEARNERS[name]
            rs = runner.rows_of(rows, method)
            best = max(rs, key=lambda r: r["score"]["mean"])
            entry = {"best_alpha": best["value"], "best_score": best["score"]}
            if 0.0 in alphas and best["value"] != 0.0:
                entry["alpha0_minus_best"] = compare.paired(
                    results, f"alpha=0 / {method}", best["label"])
            out[method] = entry
        return {"alpha": out}

    def plot(out, summary, rows, title):
        refs = {n: summary[n] for n in summary if " / " not in n}
        plots.plot_sweep(out.file("cql_alpha.png"), rows, "CQL weight α", "score", refs,
                         xscale="symlog", title=title)

    path, extra = runner.run_study(args, run_, variants, learners=args.learners,
                                   baselines=args.baselines, sweep_key="sweep",
                                   value_name="cql_alpha", plot=plot, analyse=analyse)
    for method, e in extra["alpha"].items():
        line = f"{method}: best α = {e['best_alpha']:g} ({tables.fmt_ci(e['best_score'])})"
        if "alpha0_minus_best" in e:
            d = e["alpha0_minus_best"]
            line += (f"; α = 0 minus best: {d['mean']:.2f} ± {d['ci95']:.2f} Mbit/s "
                     f"({'significant' if d['sign'] else 'not significant'})")
        print(line)
    return path


def main(argv=None) -> int:
    from experiments.cli import cli_main

    return cli_main(build_parser, run, argv, interrupted="interrupted: nothing was written")


if __name__ == "__main__":
    from experiments.cli import exit_process

    exit_process(main())
