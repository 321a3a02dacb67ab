"""Study: inter-agent coupling stress — bring the APs closer together (or raise their transmit
power) until CTDE's value decomposition Q_tot = Σ_i Q_i(o_i, a_i) falls behind the centralized
learner, which sees the global state and scores joint actions.

    python -m experiments.coupling                                  # area side 500, 200, 80 m
    python -m experiments.coupling --parameter tx_power_dbm --values 20 30 40 50

The swept parameter is an :class:`~jaxrrm.EnvParams` field: ``area_side_m`` (the AP grid is
laid out over the area, so its spacing scales with the side: 2 x 2 APs sit ``side / 2`` apart)
or ``tx_power_dbm`` (more power makes the network interference- rather than noise-limited).
Each value is its own environment, with its own behaviour dataset (made once, then reused from
``--data-dir``) and test environment; CTDE and C-MARL-CQL are trained on each and evaluated
with the baselines on the same test episodes (relative score against that value's TDM).

Writes the usual files and ``coupling.png`` (relative score against the swept value, mean ± 95%
CI over seeds). summary.json's ``"sweep"`` holds one row per (value, method) and ``"coupling"``
the paired per-seed score gap CTDE − centralized at each value, and ``falls_behind_at``: the
first value, in sweep order (strongest coupling last), from which on the gap's 95% CI lies below
zero (``null``: CTDE never falls behind in the sweep).
"""

from __future__ import annotations

import argparse

PARAMETERS = {
    # name: ({preset: values in order of increasing coupling}, axis label). Three values by
    # default: each is a behaviour dataset and a centralized learner (the costliest one).
    "area_side_m": ({"default": (500.0, 200.0, 80.0), "paper": (500.0, 250.0, 125.0, 60.0),
                     "quick": (500.0, 80.0)},
                    "side of the area [m] (AP spacing = side / grid columns)"),
    "tx_power_dbm": ({"default": (20.0, 35.0, 50.0), "paper": (10.0, 20.0, 30.0, 40.0, 50.0),
                      "quick": (20.0, 50.0)}, "AP transmit power [dBm]"),
}


def build_parser() -> argparse.ArgumentParser:
    from experiments.runner import STUDY_SEEDS, add_study_arguments

    p = argparse.ArgumentParser(
        prog="python -m experiments.coupling",
        description=(
            "Inter-agent coupling stress: shrink the area (the AP spacing scales with it) or "
            "raise the transmit power, train CTDE- and C-MARL-CQL on each environment's own "
            "behaviour dataset, and find where CTDE's value decomposition falls behind the "
            "centralized learner (paired per-seed score gap whose 95% CI lies below 0); "
            f"mean ± 95% CI over seeds (default {STUDY_SEEDS} seeds, half the main job's, to "
            "keep the sweep affordable on a laptop CPU)."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_study_arguments(p, learners=("ctde", "centralized"),
                        learner_choices=("ctde", "centralized", "independent"))
    p.add_argument("--parameter", choices=list(PARAMETERS), default="area_side_m",
                   help="the EnvParams field to sweep (an --env override of it is replaced)")
    p.add_argument("--values", nargs="+", type=_finite, default=None, metavar="VALUE",
                   help="values of --parameter in order of increasing coupling (when not given: "
                        + "; ".join(f"{k}: {' '.join(f'{v:g}' for v in d[0]['default'])} "
                                    f"(--preset paper: {' '.join(f'{v:g}' for v in d[0]['paper'])})"
                                    for k, d in PARAMETERS.items()) + ")")
    return p


def _finite(text: str) -> float:
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def run(args):
    from experiments import cli, plots, runner
    from jaxrrm.config import check_feasible
    from jaxrrm import compare

    run_ = runner.resolve(args, "coupling")  # first: it may set XLA flags for --quick
    if not {"ctde", "centralized"} <= set(args.learners):
        raise cli.CliError("--learners must include ctde and centralized (the study "
                              "compares them)")
    defaults, axis = PARAMETERS[args.parameter]
    values = runner.sweep_values(args, "--values", defaults)
    variants = []
    for v in values:
        try:
            params = run_.params.replace(**{args.parameter: v})
            check_feasible(params, run_.cfg)
        except ValueError as e:
            raise cli.CliError(f"--values {v:g}: {e}") from None
        variants.append(runner.Variant(label=f"{args.parameter}={v:g}", value=v, cfg=run_.cfg,
                                       params=params))
    ctde, central = runner.LEARNERS["ctde"], runner.LEARNERS["centralized"]

    def analyse(results, summary, rows):
        gaps = [{"value": v.value, "ctde_minus_centralized": compare.paired(
            results, f"{v.label} / {ctde}", f"{v.label} / {central}"),
            "relative": compare.paired(results, f"{v.label} / {ctde}",
                                       f"{v.label} / {central}", "relative_score")}
            for v in variants]
        behind = None
        for i in range(len(gaps)):
            if all(g["ctde_minus_centralized"]["sign"] < 0 for g in gaps[i:]):
                behind = gaps[i]["value"]
                break
        return {"coupling": {"parameter": args.parameter, "gaps": gaps,
                             "falls_behind_at": behind}}

    def plot(out, summary, rows, title):
        plots.plot_sweep(out.file("coupling.png"), rows, axis, "relative_score",
                         categorical=True, title=title)

    path, extra = runner.run_study(args, run_, variants, learners=args.learners,
                                   baselines=args.baselines, sweep_key="sweep",
                                   value_name=args.parameter, plot=plot, analyse=analyse)
    c = extra["coupling"]
    for g in c["gaps"]:
        d = g["ctde_minus_centralized"]
        print(f"{args.parameter} = {g['value']:g}: {ctde} − {central} = {d['mean']:+.2f} ± "
              f"{d['ci95']:.2f} Mbit/s")
    print(f"{ctde} falls behind {central} from {args.parameter} = {c['falls_behind_at']:g}"
          if c["falls_behind_at"] is not None else
          f"{ctde} does not fall behind {central} anywhere in the sweep")
    return path


def main(argv=None) -> int:
    from experiments.cli import cli_main

    return cli_main(build_parser, run, argv, interrupted="interrupted: nothing was written")


if __name__ == "__main__":
    from experiments.cli import exit_process

    exit_process(main())
