"""Study: the PF exponent λ of the reward, r = (1/K) Σ_j w_j^λ C_j (docs/design.md §1), and the
sum-rate vs tail-rate frontier it traces.

    python -m experiments.lambda_sweep                        # λ ∈ {0.5, 0.6, 0.7, 0.8, 0.9}
    python -m experiments.lambda_sweep --lambdas 0 0.5 1 --behaviour dqn

λ changes the reward, so every λ has its own behaviour dataset (the online behaviour is trained
on that reward; made once per λ, then reused from ``--data-dir``) and its own test environment;
the learners are trained on each and evaluated with the baselines (in the same λ's
environment, on the same test episodes; the relative score is against that λ's TDM, and the
score itself does not depend on λ). ``exhaustive`` maximizes the per-slot reward, so it is a
λ-dependent reference too; the other baselines do not depend on λ (their scores are the same at
every λ, only their returns change).

Writes the usual files and ``lambda_frontier.png`` (sum rate against 5th-percentile rate, one
point per λ for each learner and the exhaustive oracle, the λ-independent baselines as single
points) and ``lambda_score.png`` (score against λ). summary.json's ``"sweep"`` holds one row per
(λ, method) and ``"frontier"``, for each learner and the exhaustive oracle, its points, its best
λ by score and ``"trade_off"`` (:func:`trade_off`: paired per-seed differences between
neighbouring λ's and whether sum rate falls and 5%-rate rises monotonically).
"""

from __future__ import annotations

import argparse

LAMBDAS = {"default": (0.5, 0.6, 0.7, 0.8, 0.9), "paper": (0.5, 0.6, 0.7, 0.8, 0.9),
           "quick": (0.5, 0.9)}

#: Baselines whose actions do not depend on λ (their rates are identical at every λ).
LAMBDA_FREE = ("tdm", "random", "full_reuse", "max_sinr")


def build_parser() -> argparse.ArgumentParser:
    from experiments.cli import number_in
    from experiments.runner import STUDY_SEEDS, add_study_arguments

    p = argparse.ArgumentParser(
        prog="python -m experiments.lambda_sweep",
        description=(
            "Sweep of the PF exponent λ of the paper's reward: a behaviour dataset and the "
            "offline learners for every λ, evaluated with the baselines on the same test "
            "episodes; the sum-rate vs 5%-rate frontier and the score = sum + K x 5%-rate, "
            f"mean ± 95% CI over seeds (default {STUDY_SEEDS} seeds, half the main job's, to "
            "keep the sweep affordable on a laptop CPU). An --env pf_lambda=... is "
            "overridden by each λ."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_study_arguments(p)
    p.add_argument("--lambdas", nargs="+", type=number_in(0.0, 1.0), default=None,
                   metavar="LAMBDA",
                   help="PF exponents to sweep, each in [0, 1] (when not given: "
                        f"{' '.join(f'{v:g}' for v in LAMBDAS['default'])}; --quick: "
                        f"{' '.join(f'{v:g}' for v in LAMBDAS['quick'])})")
    return p


def trade_off(per_seed, labels) -> dict:
    """Is the sum-rate vs tail-rate trade monotone along ``labels`` (increasing λ)?

    ``per_seed`` maps a method label to its per-seed metrics (``{"sum_rate": [S], "p5_rate":
    [S], ...}``), every label evaluated on the same test episodes, so neighbouring λ's are
    compared by paired per-seed differences (mean ± 95% CI, :func:`metrics.paired_difference`).
    ``monotone`` is true when every step lowers the sum rate *and* raises the 5%-rate
    significantly; ``same_direction`` when every step's means move that way.
    """
    from jaxrrm import metrics

    steps = []
    for lo, hi in zip(labels[:-1], labels[1:]):
        steps.append({"from": lo, "to": hi, **{
            key: metrics.paired_difference(per_seed[hi][key], per_seed[lo][key])
            for key in ("sum_rate", "p5_rate")}})
    return {"steps": steps,
            "same_direction": all(s["sum_rate"]["mean"] < 0 < s["p5_rate"]["mean"]
                                  for s in steps),
            "monotone": all(s["sum_rate"]["sign"] == -1 and s["p5_rate"]["sign"] == 1
                            for s in steps)}


def run(args):
    from experiments import plots, runner

    run_ = runner.resolve(args, "lambda_sweep")  # first: it may set XLA flags for --quick
    lambdas = sorted(runner.sweep_values(args, "--lambdas", LAMBDAS))  # trade_off: increasing λ
    variants = [runner.Variant(label=f"lambda={lam:g}", value=lam, cfg=run_.cfg,
                               params=run_.params.replace(pf_lambda=lam)) for lam in lambdas]

    def analyse(results, summary, rows):
        frontier = {}
        methods = [runner.LEARNERS[name] for name in args.learners]
        if "exhaustive" in args.baselines:
            methods.append("exhaustive")
        for method in methods:
            rs = runner.rows_of(rows, method)
            best = max(rs, key=lambda r: r["score"]["mean"])
            frontier[method] = {
                "best_lambda": best["value"],
                "points": [{"lambda": r["value"], "sum_rate": r["sum_rate"],
                            "p5_rate": r["p5_rate"], "score": r["score"]} for r in rs],
                "trade_off": trade_off({r["label"]: results[r["label"]].per_seed for r in rs},
                                       [r["label"] for r in rs])}
        return {"frontier": frontier}

    def plot(out, summary, rows, title):
        dependent = [r for r in rows if r["kind"] != "baseline"
                     or r["method"] not in LAMBDA_FREE]
        first = variants[0].label
        refs = {r["method"]: summary[r["label"]] for r in rows
                if r["kind"] == "baseline" and r["method"] in LAMBDA_FREE
                and r["variant"] == first}
        plots.plot_frontier(out.file("lambda_frontier.png"), dependent, refs, title=title)
        plots.plot_sweep(out.file("lambda_score.png"), dependent, "PF exponent λ", "score",
                         refs, title=title)

    path, extra = runner.run_study(args, run_, variants, learners=args.learners,
                                   baselines=args.baselines, sweep_key="sweep",
                                   value_name="pf_lambda", plot=plot, analyse=analyse)
    for method, f in extra["frontier"].items():
        pts = ", ".join(f"λ={p['lambda']:g}: {p['sum_rate']['mean']:.1f} / "
                        f"{p['p5_rate']['mean']:.2f}" for p in f["points"])
        t = f["trade_off"]
        verdict = ("monotone (every step significant, paired over seeds)" if t["monotone"] else
                   "same direction at every step, not every step significant"
                   if t["same_direction"] else "not monotone")
        print(f"{method} (sum rate / 5%-rate): {pts}; best score at λ = {f['best_lambda']:g}; "
              f"trade-off {verdict}")
    return path


def main(argv=None) -> int:
    from experiments.cli import cli_main

    return cli_main(build_parser, run, argv, interrupted="interrupted: nothing was written")


if __name__ == "__main__":
    from experiments.cli import exit_process

    exit_process(main())
