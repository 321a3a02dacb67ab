"""A run's figures (matplotlib, the ``experiments`` extra): rate CDFs, sum rate against the
5th-percentile rate, learning curves, and a study's sweep, frontier and side-by-side plots."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, ax, path: Path, title: str, legend_loc: str = "best") -> None:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc=legend_loc)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)


def _ci(stat: dict) -> float:
    v = stat["ci95"]
    return 0.0 if not np.isfinite(v) else v


def plot_rate_cdf(path: Path, ue_rates: Dict[str, np.ndarray], title: str = "") -> None:
    """Empirical CDF of per-UE average rates (pooled over seeds and episodes), one line a method."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, r in ue_rates.items():
        x = np.sort(np.asarray(r).reshape(-1))
        ax.plot(x, np.arange(1, x.size + 1) / x.size, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("per-UE average rate [Mbit/s]")
    ax.set_ylabel("CDF")
    ax.axhline(0.05, color="grey", lw=0.6, ls=":")
    _finish(fig, ax, path, title)


def plot_sum_vs_tail(path: Path, summary: Dict[str, dict], title: str = "") -> None:
    """Sum rate against 5th-percentile rate, mean ± 95% CI over seeds, one point a method."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.4))
    for name, s in summary.items():
        ax.errorbar(s["p5_rate"]["mean"], s["sum_rate"]["mean"], xerr=_ci(s["p5_rate"]),
                    yerr=_ci(s["sum_rate"]), fmt="o", capsize=3, label=name)
    ax.set_xlabel("5th-percentile rate [Mbit/s]")
    ax.set_ylabel("sum rate [Mbit/s]")
    _finish(fig, ax, path, title)


def plot_learning_curves(path: Path, curves: Dict[str, dict], title: str = "") -> None:
    """Held-out score of the greedy policy against gradient updates, mean ± 95% CI over seeds,
    one line a learner (``curves[name] = {"updates": [V], "score": [V][S]}``)."""
    from jaxrrm.metrics import mean_ci95

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, c in curves.items():
        x = np.asarray(c["updates"])
        stats = [mean_ci95(np.asarray(row, np.float64)) for row in c["score"]]
        m = np.array([s[0] for s in stats])
        ci = np.nan_to_num(np.array([s[1] for s in stats]))
        ax.plot(x, m, marker="o", ms=3, label=name)
        ax.fill_between(x, m - ci, m + ci, alpha=0.2)
    ax.set_xlabel("gradient updates")
    ax.set_ylabel("score [Mbit/s] (validation episodes)")
    _finish(fig, ax, path, title)


def _x_positions(values, categorical: bool):
    if categorical:
        return np.arange(len(values), dtype=float)
    return np.asarray(values, dtype=float)


def plot_sweep(path: Path, rows, xlabel: str, metric: str = "score",
               references: Optional[Dict[str, dict]] = None, xscale: str = "linear",
               categorical: bool = False, title: str = "", kinds=("learner", "behaviour",
                                                                 "baseline")) -> None:
    """A study's headline figure: ``metric`` (mean ± 95% CI over seeds) against the swept value,
    one line per method (``rows``: the sweep rows of :func:`experiments.runner.run_variants`);
    ``references`` (``{name: summary entry}``) are drawn as horizontal lines with their CI band
    (methods that do not depend on the swept value, e.g. the baselines of a shared
    environment). ``categorical`` places the values at equal spacing with their names."""
    plt = _pyplot()
    values = list(dict.fromkeys(r["value"] for r in rows))
    xs = dict(zip(values, _x_positions(values, categorical)))
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    methods = list(dict.fromkeys(r["method"] for r in rows if r["kind"] in kinds))
    for i, method in enumerate(methods):
        rs = [r for r in rows if r["method"] == method and metric in r]
        # categorical values: side by side around each position, not joined
        shift = 0.06 * (i - (len(methods) - 1) / 2) if categorical else 0.0
        x = np.array([xs[r["value"]] for r in rs]) + shift
        y = np.array([r[metric]["mean"] for r in rs])
        ci = np.array([_ci(r[metric]) for r in rs])
        kind = rs[0]["kind"] if rs else "learner"
        ls = "none" if categorical else ("-" if kind != "baseline" else "--")
        ax.errorbar(x, y, yerr=ci, marker="o" if kind != "baseline" else "s", ms=4,
                    capsize=3, ls=ls, color=f"C{i % 10}", label=method)
    for j, (name, s) in enumerate((references or {}).items()):
        if metric not in s:
            continue
        m, c = s[metric]["mean"], _ci(s[metric])
        color = f"C{(9 - j) % 10}"   # from the other end of the cycle than the methods
        ax.axhline(m, ls=":", lw=1.2, color=color, label=f"{name}")
        ax.axhspan(m - c, m + c, color=color, alpha=0.1)
    if categorical:
        ax.set_xticks(list(xs.values()))
        ax.set_xticklabels([str(v) for v in values])
        ax.set_xlim(-0.5, len(values) - 0.5)
    else:
        if xscale == "symlog":
            positive = [v for v in values if v > 0]
            ax.set_xscale("symlog", linthresh=min(positive) if positive else 1.0)
        else:
            ax.set_xscale(xscale)
        ax.set_xticks(list(xs.values()))
        ax.set_xticklabels([f"{v:g}" for v in values])
        ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel({"score": "score [Mbit/s]", "relative_score": "score relative to TDM",
                   "sum_rate": "sum rate [Mbit/s]", "p5_rate": "5th-percentile rate [Mbit/s]",
                   "return": "episode return"}.get(metric, metric))
    _finish(fig, ax, path, title)


def plot_frontier(path: Path, rows, references: Optional[Dict[str, dict]] = None,
                  value_fmt: str = "λ={:g}", title: str = "") -> None:
    """Sum rate against 5th-percentile rate (mean ± 95% CI), one connected line per method
    through its points of the sweep, each point annotated with its value; ``references`` as
    single points (methods that do not depend on the swept value)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method]
        x = [r["p5_rate"]["mean"] for r in rs]
        y = [r["sum_rate"]["mean"] for r in rs]
        base = rs[0]["kind"] == "baseline"
        ax.errorbar(x, y, xerr=[_ci(r["p5_rate"]) for r in rs],
                    yerr=[_ci(r["sum_rate"]) for r in rs], marker="s" if base else "o", ms=4,
                    capsize=2, ls="--" if base else "-", label=method)
        for r, xi, yi in zip(rs, x, y):
            ax.annotate(value_fmt.format(r["value"]), (xi, yi), textcoords="offset points",
                        xytext=(4, -10) if base else (4, 4), fontsize=7)
    for name, s in (references or {}).items():
        ax.errorbar(s["p5_rate"]["mean"], s["sum_rate"]["mean"], xerr=_ci(s["p5_rate"]),
                    yerr=_ci(s["sum_rate"]), fmt="D", ms=5, capsize=2, label=name)
    ax.set_xlabel("5th-percentile rate [Mbit/s]")
    ax.set_ylabel("sum rate [Mbit/s]")
    _finish(fig, ax, path, title, legend_loc="lower right")  # the frontier runs top left


def plot_side_by_side(path: Path, entries: Dict[str, Dict[str, dict]], panels: Dict[str, str],
                      title: str = "") -> None:
    """Horizontal bars (mean ± 95% CI), one panel per quantity (``panels``: ``{key: axis
    label}``) and one bar per method (``entries[method][key] = {"mean", "ci95"}``), methods in
    the same order in every panel: e.g. returns beside scores."""
    plt = _pyplot()
    names = list(entries)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 1.6,
                                                      0.42 * len(names) + 1.4), sharey=True)
    axes = np.atleast_1d(axes)
    y = np.arange(len(names))
    for ax, (key, label) in zip(axes, panels.items()):
        m = [entries[n][key]["mean"] if key in entries[n] else np.nan for n in names]
        c = [_ci(entries[n][key]) if key in entries[n] else 0.0 for n in names]
        ax.barh(y, m, xerr=c, capsize=3, color=[f"C{i % 10}" for i in range(len(names))])
        ax.set_xlabel(label)
        ax.grid(alpha=0.3, axis="x")
        ax.axvline(0.0, color="black", lw=0.6)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels(names, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
