"""Study: how much of the exhaustive oracle's headroom over the best heuristic a learner can
capture, from which information.

    python -m experiments.coordination                       # area sides 500 m (default) and 80 m
    python -m experiments.coordination --areas 500 --observations local clock full

The exhaustive oracle (:func:`jaxrrm.baselines.make` ``"exhaustive"``) reads the true channel and
picks, every slot, the joint action of largest instantaneous reward; the best heuristic is the
non-oracle baseline of largest score in the same environment, on the same test episodes
(:func:`jaxrrm.compare.best_heuristic`). For every environment (``--areas``) and observation
kind (``--observations``, the :class:`~jaxrrm.EnvConfig` options of :data:`OBSERVATIONS`) the
study rolls the oracle out as an **expert dataset** (``--expert-size`` transitions, ε = 0) and
trains on it

* with the paper's local observation: centralized BC from the global state (``C-BC``: does the
  global state carry the information the oracle uses?) and per-AP BC;
* with every other observation kind: the ``--learners`` (default C-BC, BC, CTDE-, QMIX- and
  C-MARL-CQL). Where every AP observes the global state (``full``: ``obs_share="global"``) the
  centralized learners are executed *replicated* (:func:`jaxrrm.env.replicated_policy`: each AP
  runs the joint policy on the global state rebuilt from its own observation and executes its
  component; the same actions as a central controller, with no action exchanged), so that every
  learner there has decentralized execution;

and, for every ``--epsilons E > 0``, on the oracle's data with ε-exploration (every AP's action
uniformly random with probability E): the CQL learners, which can improve on noisy data where
cloning cannot, and C-BC to compare with.

Every method is compared with the best heuristic of its environment on the same test episodes
(paired per seed): score difference in Mbit/s and in %, and the **fraction of the headroom
captured**, ``(score - best heuristic) / (oracle - best heuristic)`` per seed, mean ± 95% CI
(:func:`jaxrrm.metrics.headroom_fraction`). summary.json's ``"coordination"`` holds, per
variant, the best heuristic, the oracle and every method's entry; the printed ceiling table
is the same.

Nothing is selected on the test episodes: learners are trained for the preset's updates and
evaluated after the last one (learning curves on validation episodes are in
learning_curves.json).
"""

from __future__ import annotations

import argparse

#: Observation kinds: name -> EnvConfig options (see jaxrrm.env.observe for what each adds).
OBSERVATIONS = {
    "local": {},
    "clock": {"obs_clock": True},
    "interference": {"obs_interference": True},
    "full": {"obs_interference": True, "obs_clock": True, "obs_share": "global"},
}

#: Learners trained on the local observation's expert data: the information test.
LOCAL_LEARNERS = ("bc_central", "bc")

#: Learners trained on the ε-exploration data (the CQL learners, and C-BC to compare with).
EPSILON_LEARNERS = ("ctde", "qmix", "centralized", "independent", "bc_central")

AREAS = {"default": (500.0, 80.0), "paper": (500.0, 80.0), "quick": (500.0, 80.0)}


def build_parser() -> argparse.ArgumentParser:
    from experiments.cli import number_in, positive_int
    from experiments.runner import STUDY_SEEDS, add_study_arguments

    p = argparse.ArgumentParser(
        prog="python -m experiments.coordination",
        description=(
            "Ceilings of coordination: the exhaustive oracle's data as an expert dataset, "
            "learners trained on it from the paper's local observation and from richer "
            "observations (interference reports, slot clock, shared features), each compared "
            "with the best heuristic of its environment on the same test episodes: paired "
            "score difference and fraction of the oracle's headroom captured, mean ± 95%% CI "
            f"over seeds (default {STUDY_SEEDS} seeds)."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_study_arguments(p, learners=("bc_central", "bc", "ctde", "qmix", "centralized"),
                        learner_choices=("bc_central", "bc", "ctde", "qmix", "centralized",
                                         "independent"),
                        omit=("behaviour", "dataset_size"))
    p.add_argument("--areas", nargs="+", type=number_in(0.0, low_open=True), default=None,
                   metavar="SIDE_M",
                   help="area sides in m (the 2 x 2 AP grid spacing is side / 2); default "
                        f"{' '.join(f'{a:g}' for a in AREAS['default'])}")
    p.add_argument("--observations", nargs="+", choices=list(OBSERVATIONS),
                   default=["local", "full"],
                   help="observation kinds: " + "; ".join(
                       f"{k} = {v or 'the paper'}" for k, v in OBSERVATIONS.items()))
    p.add_argument("--expert-size", type=positive_int, default=None,
                   help="transitions of the oracle's dataset (default: the preset's dataset "
                        "size)")
    p.add_argument("--epsilons", nargs="+", type=number_in(0.0, 1.0), default=[0.0, 0.2],
                   help="ε-exploration of the oracle's datasets: ε = 0 trains every learner "
                        "(only C-BC and BC on the local observation); ε > 0 the CQL learners "
                        f"and C-BC ({', '.join(EPSILON_LEARNERS)}) on the richer observations")
    return p


def variants_of(args, run_):
    """The study's variants: per area, observation kind and ε of ``--epsilons``, the oracle's
    data with the learners that train on it (see the module docstring)."""
    from experiments import cli, runner
    from jaxrrm.config import check_feasible

    areas = args.areas or AREAS[run_.preset]
    size = args.expert_size or run_.spec.size
    learners = list(args.learners)
    out = []
    for area in areas:
        try:
            params = run_.params.replace(area_side_m=area)
            check_feasible(params, run_.cfg)
        except ValueError as e:
            raise cli.CliError(f"--areas {area:g}: {e}") from None
        for obs in args.observations:
            cfg = run_.cfg.replace(**OBSERVATIONS[obs])
            for eps in args.epsilons:
                if obs == "local":
                    lrn = [n for n in learners if n in LOCAL_LEARNERS] if eps == 0 else []
                else:
                    lrn = learners if eps == 0 else [n for n in learners
                                                     if n in EPSILON_LEARNERS]
                if not lrn:
                    continue
                try:
                    spec = run_.spec.replace(behaviour="exhaustive", size=size, train_steps=0,
                                             epsilon=eps)
                except ValueError as e:
                    raise cli.CliError(f"{obs}: {e}") from None
                tag = "oracle data" if eps == 0 else f"oracle data eps={eps:g}"
                out.append(runner.Variant(label=f"{area:g} m / {obs} / {tag}",
                                          value=f"{area:g} m / {obs}" + (
                                              "" if eps == 0 else f" / eps={eps:g}"),
                                          cfg=cfg, params=params, spec=spec, learners=lrn,
                                          learner_overrides=_execution(cfg)))
    return out


def _execution(cfg) -> dict:
    """Centralized learners execute replicated at every AP when every AP observes the global
    state (``obs_share="global"``): decentralized execution with the same actions."""
    return {"execution": "replicated"} if cfg.obs_share == "global" else {}


def execution_of(label: str, method: str, variants) -> str:
    """How ``method`` of variant ``label`` is executed: ``"per AP"``, ``"replicated"`` (a joint
    policy run at every AP on its own observation) or ``"central"`` (a controller)."""
    from experiments.runner import CENTRALIZED_LEARNERS, LEARNERS

    central = {LEARNERS[n] for n in CENTRALIZED_LEARNERS}
    if method not in central:
        return "per AP"
    v = next(v for v in variants if v.label == label)
    return "replicated" if v.learner_overrides.get("execution") == "replicated" else "central"


def ceilings(results, variants) -> dict:
    """Per variant: every method against its environment's best heuristic and oracle
    (:func:`jaxrrm.compare.versus_best_heuristic` on the variant's methods), with each
    learner's execution (:func:`execution_of`)."""
    from experiments.runner import LEARNERS
    from jaxrrm import compare

    out = {}
    for v in variants:
        prefix = f"{v.label} / "
        per_seed = {k[len(prefix):]: r.per_seed for k, r in results.items()
                    if k.startswith(prefix)}
        vs = compare.versus_best_heuristic(per_seed)
        if vs is not None:
            vs["scores"] = {n: float(m["score"].mean()) for n, m in per_seed.items()}
            vs["execution"] = {n: execution_of(v.label, n, variants) for n in vs["methods"]
                               if n in set(LEARNERS.values())}
        out[v.label] = vs
    return out


def print_ceilings(table: dict) -> None:
    from experiments.runner import LEARNERS
    from experiments.tables import fmt_headroom

    learner_names = set(LEARNERS.values())
    print("\nceilings: score, paired difference to the best heuristic, fraction of the "
          "oracle's headroom (mean ± 95% CI over seeds)")
    for label, vs in table.items():
        if vs is None:
            continue
        best, scores = vs["best_heuristic"], vs["scores"]
        print(f"{label}: best heuristic {best} {scores[best]:.1f}, oracle "
              f"{scores.get('exhaustive', float('nan')):.1f}")
        for name, e in vs["methods"].items():
            if name not in learner_names:
                continue
            pc, h = e["percent"], e.get("headroom")
            line = (f"  {name:14s} ({vs['execution'][name]:10s}) {scores[name]:7.1f}  "
                    f"{pc['mean']:+6.2f} ± {pc['ci95']:.2f}%")
            if h is not None:
                line += "  headroom " + fmt_headroom(h)
            print(line)


def run(args):
    from experiments import runner

    run_ = runner.resolve(args, "coordination")  # first: it may set XLA flags for --quick
    variants = variants_of(args, run_)
    if not variants:
        from experiments.cli import CliError

        raise CliError("nothing to run: the learners and observations select no variant")
    baselines = list(dict.fromkeys(list(args.baselines) + ["reward_greedy", "exhaustive"]))

    def analyse(results, summary, rows):
        return {"coordination": ceilings(results, variants)}

    path, extra = runner.run_study(args, run_, variants, learners=args.learners,
                                   baselines=baselines, sweep_key="sweep",
                                   value_name="variant", analyse=analyse,
                                   extra_config={"observations": {
                                       o: OBSERVATIONS[o] for o in args.observations},
                                       "epsilons": list(args.epsilons)})
    print_ceilings(extra["coordination"])
    return path


def main(argv=None) -> int:
    from experiments.cli import cli_main

    return cli_main(build_parser, run, argv, interrupted="interrupted: nothing was written")


if __name__ == "__main__":
    from experiments.cli import exit_process

    exit_process(main())
