"""Results in the JSON layout of InstaDeep's marl-eval, so its aggregation and plotting tools read
them (marl-eval itself is not needed to write the layout)."""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np


def task_name(cfg, params) -> str:
    """A short name of a scenario (an :class:`~jaxrrm.config.EnvConfig` and its
    :class:`~jaxrrm.config.EnvParams`) for reports: ``"4ap-24ue-500m-umi-pf"``."""
    area = np.asarray(params.area_side_m, np.float64)
    area_txt = f"{float(area):g}m" if area.ndim == 0 else "batched-area"
    return (f"{cfg.num_aps}ap-{cfg.num_ues}ue-{area_txt}-{cfg.pathloss_model}-{cfg.reward}")


def to_marl_eval(results: Dict[str, object], task: str, env_name: str = "jaxrrm",
                 metrics_: Sequence[str] = ("score", "sum_rate", "p5_rate", "return")) -> dict:
    """``results`` (``{method: MethodResult}``, :mod:`jaxrrm.compare`) as ``{env: {task:
    {algorithm: {"run_<s>": {"step_<v>": {"step_count", metric: [values]}, "absolute_metrics":
    {metric: [values]}}}}}}``.

    One run is one seed. ``absolute_metrics`` hold the seed's test metrics (one value per
    metric: the seed's evaluation over its test episodes, as in ``per_seed``); a learner's
    ``step_<v>`` entries are its learning curve (validation episodes) after ``step_count``
    gradient updates. Fixed policies have only ``absolute_metrics``.
    """
    algos = {}
    for name, r in results.items():
        num_seeds = len(next(iter(r.per_seed.values())))
        runs = {}
        for s in range(num_seeds):
            run = {}
            if r.history is not None and len(r.history["eval_updates"]):
                for v, step in enumerate(np.asarray(r.history["eval_updates"]).tolist()):
                    run[f"step_{v}"] = {"step_count": int(step), **{
                        k: [float(r.history["eval"][k][v][s])] for k in metrics_
                        if k in r.history["eval"]}}
            run["absolute_metrics"] = {k: [float(r.per_seed[k][s])] for k in metrics_
                                       if k in r.per_seed}
            runs[f"run_{s}"] = run
        algos[name] = runs
    return {env_name: {task: algos}}
