"""Study: reward design — the paper's PF-weighted reward r = (1/K) Σ_j w_j^λ C_j against the
``log_utility`` reward r = (1/K) Σ_j [log C̄_j(t) − log C̄_j(t−1)] (docs/design.md §1). Which trains
the better scheduler by score, and does either learner game its reward (high return, poor tail)?

    python -m experiments.reward_design
    python -m experiments.reward_design --rewards pf log_utility --learners ctde centralized

For each training reward the behaviour dataset is made under that reward (made once, then
reused from ``--data-dir``) and the learners are trained on it. Every policy — learners and
baselines — is then evaluated on the same test keys under *both* rewards: the rates, hence the
score, do not depend on the reward (same channel, same actions; checked and recorded as
``scores_agree``), only the return does, so each policy's PF return and log-utility return are
read side by side with its score. ``exhaustive`` maximizes the instantaneous reward, so it is
two policies, one per reward; the other baselines do not depend on the reward.

Writes the usual files (methods named ``"<method> [<training reward>]"``; their ``return`` in
``"methods"`` is the PF return, ``return_log_utility`` beside it) and ``reward_design.png``
(PF return, log-utility return and score side by side, mean ± 95% CI over seeds).
summary.json's ``"reward_design"`` holds one row per policy with both returns and the score
metrics, each reward's ranking of the policies by return next to the ranking by score, and per
learner ``"games_reward"``: whether its return under its own training reward is significantly
above that of the best-scoring baseline while its score is significantly below it (paired over
seeds) — a high return bought with a poor tail.
"""

from __future__ import annotations

import argparse

from jaxrrm.config import REWARDS

#: Baselines whose actions depend on the reward (they optimize it).
REWARD_DEPENDENT = ("exhaustive",)


def build_parser() -> argparse.ArgumentParser:
    from experiments.runner import STUDY_SEEDS, add_study_arguments

    p = argparse.ArgumentParser(
        prog="python -m experiments.reward_design",
        description=(
            "The paper's PF-weighted reward against the log-utility reward: behaviour dataset "
            "and offline learners per reward, every policy evaluated under both rewards on the "
            "same test keys, returns side by side with the score = sum + K x 5%-rate; mean ± "
            f"95% CI over seeds (default {STUDY_SEEDS} seeds, half the main job's, to keep the "
            "study affordable on a laptop CPU). An --env reward=... is overridden."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_study_arguments(p, baselines=("full_reuse", "max_sinr", "exhaustive"))
    p.add_argument("--rewards", nargs="+", choices=REWARDS, default=None, metavar="REWARD",
                   help=f"training rewards (choices: {', '.join(REWARDS)}; default: all); "
                        "every policy is evaluated under all of them")
    return p


def run(args):
    from experiments import cli, outputs, plots, runner, tables

    run_ = runner.resolve(args, "reward_design")  # first: it may set XLA flags for --quick

    import jax
    import numpy as np

    from jaxrrm import baselines as baselines_lib
    from jaxrrm import compare, evaluate

    rewards = runner.sweep_values(args, "--rewards", {k: REWARDS for k in
                                                       ("default", "paper", "quick")})
    env = {r: (run_.cfg.replace(reward=r), run_.params) for r in REWARDS}
    names = list(dict.fromkeys(["tdm"] + list(args.baselines)))
    learner_cfgs = {runner.LEARNERS[n]: run_.learner_config(n) for n in args.learners}

    out = outputs.OutputDir(args.out or outputs.default_out_dir("reward_design"),
                            overwrite=args.overwrite)
    try:
        test_keys = evaluate.seed_keys(args.seed, run_.seeds)
        train_key = jax.random.fold_in(jax.random.key(args.seed), 0x0FF1)
        # evals[policy label][test reward] -> MethodResult; trained_on[label] -> reward or None
        evals, trained_on = {}, {}
        bar = cli.progress(baseline_policies(names, rewards), "baselines",
                              enabled=run_.progress)
        for label, b, r in bar:
            bar.set_postfix_str(label)
            try:
                pol = baselines_lib.make(b, env[r or "pf"][0])
            except ValueError as e:
                raise cli.CliError(str(e)) from None
            evals[label] = {e: compare.evaluate_policy(pol, test_keys, c, p, run_.episodes,
                                                       mesh=run_.mesh)
                            for e, (c, p) in env.items()}
            trained_on[label] = r
        datasets = {}
        for r in rewards:
            cfg, params = env[r]
            beh = runner.dataset(run_, run_.spec, cfg, params)
            datasets[r] = runner.dataset_info(beh)
            for method, lc in learner_cfgs.items():
                label = f"{method} [{r}]"
                evals[label] = runner.train_learner_envs(run_, label, lc, beh, test_keys,
                                                         train_key, env, cfg, params)
                trained_on[label] = r
        # Scores come from the PF evaluation; the other rewards only add their returns.
        results = {label: ev["pf"] for label, ev in evals.items()}
        summary = compare.summarize(results, "tdm")
        agree = all(np.allclose(ev[e].per_seed["score"], ev["pf"].per_seed["score"],
                                rtol=1e-5) for ev in evals.values() for e in ev)
        for label, ev in evals.items():
            for e in REWARDS:
                if e != "pf":
                    summary[label][f"return_{e}"] = dict(zip(
                        ("mean", "ci95"), evaluate.metrics.mean_ci95(ev[e].per_seed["return"])))
        section = _analyse(evals, summary, trained_on, learner_cfgs, names, rewards)
        section["scores_agree"] = bool(agree)
        section["datasets"] = datasets
        outputs.write_outputs(out, run_, results, summary,
                              extra_summary={"reward_design": section}, plots=not args.no_plots,
                              extra_config={"study": {"parameter": "reward",
                                                      "values": rewards}})
        if not args.no_plots:
            cfg = run_.cfg
            plots.plot_side_by_side(
                out.file("reward_design.png"),
                {r["method"]: {"return_pf": r["return_pf"],
                               "return_log_utility": r["return_log_utility"],
                               "score": r["score"]} for r in section["rows"]},
                {"return_pf": "PF return / episode",
                 "return_log_utility": "log-utility return / episode",
                 "score": "score [Mbit/s]"},
                title=f"{cfg.num_aps} APs, {cfg.num_ues} UEs, {run_.seeds} seeds x "
                      f"{run_.episodes} episodes; [reward] = trained on / optimizes")
        path = out.commit()
    except BaseException:
        out.abort()
        raise
    tables.print_table(run_, summary, results, path)
    _print(section)
    return path


def baseline_policies(names, rewards):
    """``[(label, baseline, reward or None)]``: a reward-dependent baseline (one that optimizes
    the reward, :data:`REWARD_DEPENDENT`) once per training reward, labelled ``"<name>
    [<reward>]"``; the others once, under their plain name."""
    return [(f"{b} [{r}]" if r else b, b, r) for b in names
            for r in (rewards if b in REWARD_DEPENDENT else [None])]


def _analyse(evals, summary, trained_on, learner_cfgs, baselines, rewards) -> dict:
    from jaxrrm import metrics

    rows = []
    for label in evals:
        s = summary[label]
        rows.append({"method": label, "trained_on": trained_on[label],
                     "kind": "baseline" if label.split(" [")[0] in baselines else "learner",
                     "score": s["score"], "relative_score": s["relative_score"],
                     "sum_rate": s["sum_rate"], "p5_rate": s["p5_rate"],
                     **{f"return_{e}": (s["return"] if e == "pf" else s[f"return_{e}"])
                        for e in REWARDS}})
    by_score = [r["method"] for r in sorted(rows, key=lambda r: -r["score"]["mean"])]
    rankings = {"score": by_score}
    for e in REWARDS:
        rankings[f"return_{e}"] = [r["method"] for r in sorted(
            rows, key=lambda r: -r[f"return_{e}"]["mean"])]
    base = [r for r in rows if r["kind"] == "baseline"]
    best = max(base, key=lambda r: r["score"]["mean"])["method"]
    gaming = {}
    for method in learner_cfgs:
        for r in rewards:
            label = f"{method} [{r}]"
            ret = metrics.paired_difference(evals[label][r].per_seed["return"],
                                            evals[best][r].per_seed["return"])
            score = metrics.paired_difference(evals[label]["pf"].per_seed["score"],
                                              evals[best]["pf"].per_seed["score"])
            p5 = metrics.paired_difference(evals[label]["pf"].per_seed["p5_rate"],
                                           evals[best]["pf"].per_seed["p5_rate"])
            gaming[label] = {"reference": best, "return_minus_reference": ret,
                             "score_minus_reference": score, "p5_minus_reference": p5,
                             "games_reward": bool(ret["sign"] > 0 and score["sign"] < 0)}
    learners = [r for r in rows if r["kind"] == "learner"]
    better = max(learners, key=lambda r: r["score"]["mean"]) if learners else None
    return {"rows": rows, "rankings": rankings, "gaming": gaming,
            "best_learner_by_score": better and better["method"]}


def _print(section) -> None:
    from experiments.tables import fmt_ci, text_table

    print()
    header = ["policy", "trained on", "score [Mbit/s]", "5%-rate", "PF return",
              "log-utility return"]
    body = [[r["method"], r["trained_on"] or "-", fmt_ci(r["score"]), fmt_ci(r["p5_rate"], 3),
             fmt_ci(r["return_pf"], 1), fmt_ci(r["return_log_utility"], 3)]
            for r in section["rows"]]
    print(text_table(header, body))
    for label, g in section["gaming"].items():
        r, s = g["return_minus_reference"], g["score_minus_reference"]
        print(f"{label} vs {g['reference']}: return {r['mean']:+.3g} ± {r['ci95']:.2g}, score "
              f"{s['mean']:+.2f} ± {s['ci95']:.2f} -> "
              f"{'games its reward' if g['games_reward'] else 'no evidence of reward gaming'}")
    print(f"best learner by score: {section['best_learner_by_score']}"
          + ("" if section["scores_agree"] else
             "  (WARNING: scores differ between the reward environments)"))


def main(argv=None) -> int:
    from experiments.cli import cli_main

    return cli_main(build_parser, run, argv, interrupted="interrupted: nothing was written")


if __name__ == "__main__":
    from experiments.cli import exit_process

    exit_process(main())
