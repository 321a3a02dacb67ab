"""A run's results as text: the summary table (printed, and as ``summary.csv``), a study's sweep
table and the comparison with the best heuristic."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, Optional, Sequence


def fmt_ci(stat: dict, digits: int = 2) -> str:
    """``"mean ± ci95"`` of a summary entry with ``digits`` decimals."""
    return f"{stat['mean']:.{digits}f} ± {stat['ci95']:.{digits}f}"


def text_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """``header``, a rule and the ``body`` rows as fixed-width text columns (two spaces apart)."""
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in body])


def format_table(summary: Dict[str, dict], extra: Optional[Dict[str, str]] = None) -> str:
    """A fixed-width text table: one row per method, mean ± 95% CI per metric."""
    cols = [("sum_rate", "sum rate [Mbit/s]", 2), ("p5_rate", "5%-rate [Mbit/s]", 3),
            ("score", "score [Mbit/s]", 2), ("relative_score", "rel. score (TDM=1)", 3)]
    header = ["method"] + [c[1] for c in cols] + (list(next(iter(extra.values())).keys())
                                                  if extra else [])
    rows = []
    for name, stats in summary.items():
        row = [name] + [fmt_ci(stats[key], d) if key in stats else "-" for key, _, d in cols]
        if extra:
            row += list(extra.get(name, {}).values())
        rows.append(row)
    return text_table(header, rows)


def write_summary_csv(path: Path, summary: Dict[str, dict]) -> None:
    """The summary table as CSV: one row per method, mean and ci95 per metric."""
    metrics = ["sum_rate", "p5_rate", "score", "relative_score"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method"] + [f"{m}_{k}" for m in metrics for k in ("mean", "ci95")])
        for name, stats in summary.items():
            w.writerow([name] + [stats.get(m, {}).get(k, "") for m in metrics
                                 for k in ("mean", "ci95")])


def print_table(run, summary: dict, results: Dict[str, object], path: Path) -> None:
    """The summary table of ``run`` (:class:`experiments.runner.Run`) with each method's
    training time, under a line that says what was run and where; then the output path."""
    from experiments.outputs import machine_info

    info = machine_info()
    extra = {n: {"train [s]": f"{r.train_seconds:.0f}" if r.history is not None else "-"}
             for n, r in results.items()}
    cfg = run.cfg
    print()
    print(f"{cfg.num_aps} APs x {cfg.num_ues} UEs, N={cfg.num_candidates}, T={cfg.horizon}, "
          f"{run.seeds} seeds x {run.episodes} test episodes, score = sum + "
          f"{float(run.params.score_mu):g} x 5%-rate (mean ± 95% CI over seeds); "
          f"{info['cpu']}, JAX {info['jax']} ({info['backend']})")
    print(format_table(summary, extra))
    print(f"\nwritten to {path}")


def print_sweep(rows: Sequence[dict], value_name: str) -> None:
    """A compact table of the sweep: one line per (value, method)."""
    header = [value_name, "method", "score [Mbit/s]", "rel. score (TDM=1)", "sum rate",
              "5%-rate", "return"]
    body = [[str(r["value"]), r["method"]] + [fmt_ci(r[k], d) if k in r else "-" for k, d in
                                              (("score", 2), ("relative_score", 3),
                                               ("sum_rate", 2), ("p5_rate", 3),
                                               ("return", 1))] for r in rows]
    print()
    print(text_table(header, body))


def fmt_headroom(h: dict) -> str:
    """A headroom fraction (:func:`jaxrrm.metrics.headroom_fraction`) as text."""
    if h["mean"] is None:
        return f"undefined (oracle not above the heuristic on {h['undefined_seeds']} seeds)"
    return f"{h['mean']:+.3f} ± {h['ci95']:.3f}"


def print_versus(versus: Optional[dict]) -> None:
    """Print :func:`jaxrrm.compare.versus_best_heuristic`'s paired differences and headroom."""
    if not versus:
        return
    best = versus["best_heuristic"]
    print(f"\nagainst the best heuristic ({best}), paired over seeds; headroom = (score - {best})"
          f" / ({versus['oracle']} - {best})" if versus["oracle"] else
          f"\nagainst the best heuristic ({best}), paired over seeds")
    for name, e in versus["methods"].items():
        d, pc = e["minus"], e["percent"]
        line = (f"  {name}: {d['mean']:+.2f} ± {d['ci95']:.2f} Mbit/s "
                f"({pc['mean']:+.2f} ± {pc['ci95']:.2f}%)")
        if "headroom" in e:
            line += ", headroom " + fmt_headroom(e["headroom"])
        print(line)
