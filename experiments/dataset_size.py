"""Study: how much offline data the learner needs — dataset sizes from 10 K to 640 K
transitions, and where performance saturates.

    python -m experiments.dataset_size                          # 10 K ... 160 K
    python -m experiments.dataset_size --sizes 10000 40000 160000 640000
    python -m experiments.dataset_size --preset paper            # 10 K ... 640 K

The behaviour dataset is made once, for the largest size (an online behaviour trains for at
least that many transitions; cached in ``--data-dir``), and each smaller dataset is its last
``n`` transitions (:func:`jaxrrm.data.last_transitions`): the datasets are nested and each
is the best-trained part of the behaviour's stream, as a dataset of that size from the same
training run would be. The learners are trained on every size (the same number of updates) and
evaluated with the baselines on the same test episodes.

Writes the usual files and ``dataset_size.png`` (score against dataset size, log scale, mean ±
95% CI over seeds; baselines as bands). summary.json's ``"sweep"`` holds one row per (size,
learner) and ``"saturation"``, per learner, the paired per-seed score difference of every size
to the largest, and ``saturates_at``: the smallest size from which on no size is significantly
(95% CI) below the largest.
"""

from __future__ import annotations

import argparse

SIZES = {"default": (10_000, 20_000, 40_000, 80_000, 160_000),
         "paper": (10_000, 20_000, 40_000, 80_000, 160_000, 320_000, 640_000),
         "quick": (1_600, 6_400)}


def build_parser() -> argparse.ArgumentParser:
    from experiments.cli import positive_int
    from experiments.runner import STUDY_SEEDS, add_study_arguments

    p = argparse.ArgumentParser(
        prog="python -m experiments.dataset_size",
        description=(
            "Offline learners trained on nested behaviour datasets of growing size (the last "
            "n transitions of one behaviour run), evaluated with the baselines on the same test "
            "episodes: where does the score = sum + K x 5%-rate saturate? Mean ± 95% CI over "
            f"seeds (default {STUDY_SEEDS} seeds, half the main job's, to keep the sweep "
            "affordable on a laptop CPU)."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_study_arguments(p, omit=("dataset_size",))
    p.add_argument("--sizes", nargs="+", type=positive_int, default=None, metavar="N",
                   help="dataset sizes in transitions (when not given: "
                        f"{' '.join(str(n) for n in SIZES['default'])}; --preset paper: "
                        f"{' '.join(str(n) for n in SIZES['paper'])}; --quick: "
                        f"{' '.join(str(n) for n in SIZES['quick'])})")
    return p


def run(args):
    from experiments import plots, runner
    from jaxrrm import compare, data

    run_ = runner.resolve(args, "dataset_size")  # first: it may set XLA flags for --quick
    sizes = sorted(runner.sweep_values(args, "--sizes", SIZES))
    run_.spec = run_.dataset_spec(size=max(sizes))
    largest = {}

    def behaviour(n):   # the largest dataset is loaded or made once, when first needed
        def get():
            if "beh" not in largest:
                largest["beh"] = runner.dataset(run_, run_.spec)
            beh = largest["beh"]
            return beh._replace(dataset=data.last_transitions(beh.dataset, n),
                                meta={**beh.meta, "tail_of": beh.dataset.size})
        return get

    variants = [runner.Variant(label=f"size={n}", value=n, behaviour=behaviour(n))
                for n in sizes]

    def analyse(results, summary, rows):
        out = {}
        for name in args.learners:
            method = runner.LEARNERS[name]
            big = f"size={sizes[-1]} / {method}"
            diffs = [{"size": n, "minus_largest": compare.paired(results, f"size={n} / {method}",
                                                                 big)} for n in sizes]
            sat = sizes[-1]
            for i in range(len(sizes)):
                if all(d["minus_largest"]["sign"] >= 0 for d in diffs[i:]):
                    sat = sizes[i]
                    break
            out[method] = {"saturates_at": sat, "differences": diffs}
        return {"saturation": out}

    def plot(out, summary, rows, title):
        refs = {n: summary[n] for n in summary if " / " not in n}
        plots.plot_sweep(out.file("dataset_size.png"), rows, "dataset size [transitions]",
                         "score", refs, xscale="log", title=title)

    path, extra = runner.run_study(args, run_, variants, learners=args.learners,
                                   baselines=args.baselines, sweep_key="sweep",
                                   value_name="dataset_size", plot=plot, analyse=analyse)
    for method, s in extra["saturation"].items():
        print(f"{method}: saturates at {s['saturates_at']} transitions (no larger size is "
              f"significantly better than it, up to {sizes[-1]})")
    return path


def main(argv=None) -> int:
    from experiments.cli import cli_main

    return cli_main(build_parser, run, argv, interrupted="interrupted: nothing was written")


if __name__ == "__main__":
    from experiments.cli import exit_process

    exit_process(main())
