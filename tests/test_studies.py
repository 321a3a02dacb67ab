"""The study entry points (issue 5): a tiny in-process run of each, the structure of what it
writes, and clean errors for bad sweep flags.

Every run uses the same tiny environment and fixed behaviours (no online SAC/DQN is compiled),
so the studies share most compilations within the process.
"""

import json
import math

import numpy as np
import pytest

from experiments import (coupling, cql_alpha, dataset_quality, dataset_size, dynamic_users,
                         lambda_sweep, reward_design)

ENV = ["--env", "num_aps=2", "--env", "num_ues=6", "--env", "num_candidates=2",
       "--env", "horizon=12"]
SIZES = ["--seeds", "2", "--episodes", "2", "--updates", "20", "--batch-size", "16",
         "--hidden", "16,16", "--no-progress", "--baselines", "full_reuse"]
TINY = ENV + SIZES + ["--dataset-size", "400"]
METRICS = ("sum_rate", "p5_rate", "score", "relative_score", "return")


def _run(module, tmp_path, flags, plots=False):
    out = tmp_path / "run"
    argv = flags + ["--out", str(out), "--data-dir", str(tmp_path / "data")]
    if not plots:
        argv.append("--no-plots")
    assert module.main(argv) == 0
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "summary.json", "summary.csv", "per_seed.json"} <= files
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []
    return out, json.loads((out / "summary.json").read_text()), files


def _finite(stat):
    return math.isfinite(stat["mean"]) and stat["ci95"] >= 0


def _check_methods(summary, expected):
    methods = summary["methods"]
    assert set(expected) <= set(methods), sorted(methods)
    for name, m in methods.items():
        for key in METRICS:
            assert _finite(m[key]), (name, key)


def _check_sweep(summary, values, methods, key="sweep"):
    sweep = summary[key]
    assert sweep["values"] == values
    for method in methods:
        rows = [r for r in sweep["rows"] if r["method"] == method]
        assert [r["value"] for r in rows] == values, method
        for r in rows:
            assert r["label"] in summary["methods"]
            for k in ("score", "relative_score", "sum_rate", "p5_rate", "return"):
                assert _finite(r[k]), (method, r["value"], k)


def test_cql_alpha(tmp_path):
    out, s, _ = _run(cql_alpha, tmp_path, TINY + ["--behaviour", "random_walk",
                                                   "--alphas", "0", "1"])
    _check_methods(s, ["tdm", "full_reuse", "alpha=0 / CTDE-MARL-CQL",
                       "alpha=1 / CTDE-MARL-CQL"])
    _check_sweep(s, [0.0, 1.0], ["CTDE-MARL-CQL"])
    a = s["alpha"]["CTDE-MARL-CQL"]
    assert a["best_alpha"] in (0.0, 1.0)
    # The baselines of a shared environment are evaluated once; TDM is the reference.
    assert s["methods"]["tdm"]["relative_score"]["mean"] == pytest.approx(1.0)
    assert s["seeds"] == 2 and s["datasets"]["alpha=0"]["size"] == 400
    config = json.loads((out / "config.json").read_text())
    assert config["study"] == {"parameter": "cql_alpha", "values": [0.0, 1.0]}


def test_dataset_quality_with_plots(tmp_path):
    out, s, files = _run(dataset_quality, tmp_path, TINY + [
        "--behaviours", "random_walk", "full_reuse", "--baselines", "max_sinr"], plots=True)
    _check_methods(s, ["tdm", "max_sinr", "random_walk / CTDE-MARL-CQL",
                       "full_reuse / CTDE-MARL-CQL", "full_reuse / behaviour"])
    _check_sweep(s, ["random_walk", "full_reuse"], ["CTDE-MARL-CQL"])
    assert sorted(s["ranking"]["CTDE-MARL-CQL"]) == ["full_reuse", "random_walk"]
    test = s["ranking_test"]["CTDE-MARL-CQL"]
    assert test["order"] == s["ranking"]["CTDE-MARL-CQL"] and len(test["steps"]) == 1
    assert {test["steps"][0]["better"], test["steps"][0]["worse"]} == {"full_reuse",
                                                                       "random_walk"}
    assert {d["behaviour"] for d in s["datasets"].values()} == {"random_walk", "full_reuse"}
    assert {"dataset_quality.png", "rate_cdf.png", "sum_vs_tail.png",
            "learning_curves.png"} <= files
    assert all((out / f).stat().st_size > 1000 for f in files if f.endswith(".png"))


def test_dataset_ranking_by_hand():
    # Scores of 4 seeds: A beats B by 2 +- a little on every seed, C is B's mean plus noise.
    a = np.array([270.0, 275.0, 268.0, 272.0])
    per_seed = {"A": {"score": a}, "B": {"score": a - 2 + np.array([0.1, -0.1, 0.2, -0.2])},
                "C": {"score": a - 2 + np.array([-1.0, 1.5, -2.0, 0.9])}}
    t = dataset_quality.ranking_test(per_seed, {"sac": "A", "dqn": "B", "rw": "C"})
    assert t["order"] == ["sac", "dqn", "rw"]     # C's mean is 0.15 below B's: noise
    assert t["steps"][0]["score"]["mean"] == pytest.approx(2.0)
    assert t["steps"][1]["score"]["mean"] == pytest.approx(0.15)
    assert t["steps"][1]["score"]["sign"] == 0 and not t["strict"]
    per_seed["C"]["score"] = a - 5 + np.array([0.1, -0.1, 0.0, 0.0])
    t = dataset_quality.ranking_test(per_seed, {"sac": "A", "dqn": "B", "rw": "C"})
    assert t["order"] == ["sac", "dqn", "rw"] and t["strict"]


def test_dataset_size_nested_slices(tmp_path):
    _, s, _ = _run(dataset_size, tmp_path, ENV + SIZES + ["--behaviour", "random_walk",
                                                          "--sizes", "400", "100"])
    _check_sweep(s, [100, 400], ["CTDE-MARL-CQL"])
    sat = s["saturation"]["CTDE-MARL-CQL"]
    assert sat["saturates_at"] in (100, 400)
    assert [d["size"] for d in sat["differences"]] == [100, 400]
    # One dataset (the largest) is made; the smaller one is its tail.
    ds = s["datasets"]
    assert ds["size=100"]["path"] == ds["size=400"]["path"]
    assert (ds["size=100"]["size"], ds["size=400"]["size"]) == (100, 400)
    assert ds["size=100"]["tail_of"] == 400 and ds["size=400"]["tail_of"] == 400


def test_last_transitions_is_the_tail():
    from jaxrrm import data

    n = 30
    ds = data.Transitions(**{f: np.arange(n * 2).reshape(n, 2) + i
                             for i, f in enumerate(data.FIELDS)})
    tail = data.last_transitions(ds, 7)
    assert tail.size == 7
    np.testing.assert_array_equal(tail.reward, np.asarray(ds.reward)[-7:])
    np.testing.assert_array_equal(tail.obs, np.asarray(ds.obs)[-7:])
    assert data.last_transitions(ds, n).size == n
    for bad in (0, n + 1, 2.5):
        with pytest.raises(ValueError, match="n="):
            data.last_transitions(ds, bad)


def test_lambda_sweep(tmp_path):
    _, s, _ = _run(lambda_sweep, tmp_path, TINY + ["--behaviour", "random_walk",
                                                    "--lambdas", "0.9", "0.5",   # sorted
                                                    "--baselines", "full_reuse", "exhaustive"])
    _check_methods(s, ["lambda=0.5 / tdm", "lambda=0.9 / full_reuse",
                       "lambda=0.9 / CTDE-MARL-CQL"])
    _check_sweep(s, [0.5, 0.9], ["CTDE-MARL-CQL", "tdm", "full_reuse"])
    pts = s["frontier"]["CTDE-MARL-CQL"]["points"]
    assert [p["lambda"] for p in pts] == [0.5, 0.9]
    t = s["frontier"]["CTDE-MARL-CQL"]["trade_off"]
    assert [(x["from"], x["to"]) for x in t["steps"]] == [("lambda=0.5 / CTDE-MARL-CQL",
                                                           "lambda=0.9 / CTDE-MARL-CQL")]
    assert [p["lambda"] for p in s["frontier"]["exhaustive"]["points"]] == [0.5, 0.9]
    assert len(s["frontier"]["exhaustive"]["trade_off"]["steps"]) == 1
    # Each lambda's relative score is against its own TDM; TDM's actions do not depend on λ.
    m = s["methods"]
    assert m["lambda=0.5 / tdm"]["score"]["mean"] == pytest.approx(
        m["lambda=0.9 / tdm"]["score"]["mean"])
    assert m["lambda=0.5 / tdm"]["return"]["mean"] != m["lambda=0.9 / tdm"]["return"]["mean"]


def test_coupling(tmp_path):
    _, s, _ = _run(coupling, tmp_path, TINY + ["--behaviour", "random_walk",
                                                "--values", "500", "100"])
    _check_sweep(s, [500.0, 100.0], ["CTDE-MARL-CQL", "C-MARL-CQL", "tdm"])
    c = s["coupling"]
    assert c["parameter"] == "area_side_m"
    assert [g["value"] for g in c["gaps"]] == [500.0, 100.0]
    assert all(math.isfinite(g["ctde_minus_centralized"]["mean"]) for g in c["gaps"])
    assert c["falls_behind_at"] in (None, 500.0, 100.0)


def test_dynamic_users(tmp_path):
    _, s, _ = _run(dynamic_users, tmp_path, TINY + ["--behaviour", "random_walk",
                                                     "--speeds", "30"])
    envs = ["static", "mobile 30 m/s"]
    _check_methods(s, [f"{e} / {m}" for e in envs for m in ("tdm", "full_reuse",
                                                             "CTDE-MARL-CQL")])
    _check_sweep(s, envs, ["CTDE-MARL-CQL", "full_reuse"])
    (entry,) = s["mobility"]["CTDE-MARL-CQL"]
    assert entry["test_env"] == "mobile 30 m/s" and entry["ue_speed_mps"] == 30.0
    assert math.isfinite(entry["relative_score_change"]["mean"])
    # against the best heuristic of the mobile environment (tdm or full_reuse here)
    gap = entry["minus_best_heuristic"]
    assert gap["baseline"] in ("tdm", "full_reuse") and math.isfinite(gap["mean"])
    m = s["methods"]
    assert m[f"mobile 30 m/s / {gap['baseline']}"]["score"]["mean"] == max(
        m[f"mobile 30 m/s / {b}"]["score"]["mean"] for b in ("tdm", "full_reuse"))
    # The same trained policy, other test environment: one training, shared history.
    assert s["train_seconds"]["static / CTDE-MARL-CQL"] == \
        s["train_seconds"]["mobile 30 m/s / CTDE-MARL-CQL"]


def test_reward_design(tmp_path):
    _, s, _ = _run(reward_design, tmp_path, TINY + ["--behaviour", "random_walk"])
    rd = s["reward_design"]
    labels = {r["method"] for r in rd["rows"]}
    assert labels == {"tdm", "full_reuse", "CTDE-MARL-CQL [pf]", "CTDE-MARL-CQL [log_utility]"}
    assert rd["scores_agree"] is True   # the reward does not change rates
    for r in rd["rows"]:
        for k in ("score", "p5_rate", "return_pf", "return_log_utility"):
            assert _finite(r[k]), (r["method"], k)
        assert r["method"] in s["methods"]
        assert s["methods"][r["method"]]["return_log_utility"] == r["return_log_utility"]
    assert set(rd["gaming"]) == {"CTDE-MARL-CQL [pf]", "CTDE-MARL-CQL [log_utility]"}
    assert all(isinstance(g["games_reward"], bool) for g in rd["gaming"].values())
    assert sorted(rd["rankings"]["score"]) == sorted(labels)
    assert set(rd["datasets"]) == {"pf", "log_utility"}


def test_reward_design_baselines_that_optimize_the_reward_are_one_per_reward():
    assert reward_design.baseline_policies(["tdm", "exhaustive", "full_reuse"],
                                           ["pf", "log_utility"]) == [
        ("tdm", "tdm", None), ("exhaustive [pf]", "exhaustive", "pf"),
        ("exhaustive [log_utility]", "exhaustive", "log_utility"),
        ("full_reuse", "full_reuse", None)]


@pytest.mark.parametrize("module, flags, message", [
    (cql_alpha, ["--alphas", "-1"], "expected a number in [0, 1e+06]"),
    (cql_alpha, ["--alphas", "nan"], "expected a number"),
    (lambda_sweep, ["--lambdas", "1.5"], "expected a number in [0, 1]"),
    (dataset_size, ["--sizes", "0"], "positive integer"),
    (dynamic_users, ["--speeds", "0"], "expected a number in (0, inf)"),
    (coupling, ["--values", "inf"], "finite"),
    (dataset_quality, ["--behaviours", "bogus"], "invalid choice"),
    (reward_design, ["--rewards", "bogus"], "invalid choice"),
])
def test_bad_sweep_flag_is_argparse_error(module, flags, message, tmp_path, capsys):
    assert module.main(flags + ["--out", str(tmp_path / "x")]) == 2

    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("module, flags, message", [
    (lambda_sweep, ["--lambdas", "0.5", "0.5"], "--lambdas: every value must appear once"),
    (coupling, ["--values", "-5"], "area_side_m"),
    (coupling, ["--learners", "ctde"], "must include ctde and centralized"),
    (dynamic_users, ["--env", "mobility=true"], "static"),
])
def test_bad_sweep_values_exit_cleanly(module, flags, message, tmp_path, capsys):
    assert module.main(TINY + flags + ["--out", str(tmp_path / "x"), "--no-plots",
                                       "--data-dir", str(tmp_path / "d")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_refuses_existing_output(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    assert cql_alpha.main(TINY + ["--out", str(tmp_path / "x")]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("module", [cql_alpha, dataset_quality, dataset_size, lambda_sweep,
                                    coupling, dynamic_users, reward_design])
def test_help_documents_every_flag(module, capsys):
    assert module.main(["--help"]) == 0

    text = capsys.readouterr().out
    parser = module.build_parser()
    for action in parser._actions:
        assert action.help, action.dest
        for opt in action.option_strings:
            assert opt in text


def test_lambda_trade_off_by_hand():
    # Three λ's, 4 seeds. Sum rate falls by 10 +- 1 and 5%-rate rises by 0.5 +- 0.1 at every
    # step: monotone. Then the second step's 5%-rate change is noise around 0: same direction
    # in the mean but not significant, so not monotone.
    base = np.array([200.0, 210.0, 190.0, 205.0])
    tail = np.array([2.0, 2.2, 1.9, 2.1])
    jitter = np.array([0.5, -0.5, 1.0, -1.0])
    per_seed = {f"l{i}": {"sum_rate": base - 10 * i + jitter * i,
                          "p5_rate": tail + 0.5 * i + 0.05 * jitter * i} for i in range(3)}
    t = lambda_sweep.trade_off(per_seed, ["l0", "l1", "l2"])
    assert t["monotone"] and t["same_direction"]
    assert t["steps"][0]["sum_rate"]["mean"] == pytest.approx(-10.0)
    assert t["steps"][1]["p5_rate"]["mean"] == pytest.approx(0.5)
    per_seed["l2"]["p5_rate"] = per_seed["l1"]["p5_rate"] + np.array([0.3, -0.3, 0.2, -0.1])
    t = lambda_sweep.trade_off(per_seed, ["l0", "l1", "l2"])
    assert t["same_direction"] and not t["monotone"]
    assert t["steps"][1]["p5_rate"]["sign"] == 0
    per_seed["l2"]["sum_rate"] = per_seed["l1"]["sum_rate"] + 5.0
    assert not lambda_sweep.trade_off(per_seed, ["l0", "l1", "l2"])["same_direction"]


def test_coordination(tmp_path):
    from experiments import coordination

    flags = ENV + SIZES + ["--expert-size", "300", "--areas", "500", "80",
                           "--observations", "local", "full", "--epsilons", "0", "0.3",
                           "--learners", "bc_central", "bc", "qmix"]
    _, s, _ = _run(coordination, tmp_path, flags)
    labels = ["500 m / local / oracle data", "500 m / full / oracle data",
              "500 m / full / oracle data eps=0.3", "80 m / local / oracle data",
              "80 m / full / oracle data", "80 m / full / oracle data eps=0.3"]
    assert list(s["coordination"]) == labels
    # local observation: only the information test (C-BC, BC); eps data: only the CQL learner
    m = s["methods"]
    assert "500 m / local / oracle data / C-BC" in m and "500 m / local / oracle data / BC" in m
    assert "500 m / local / oracle data / QMIX-MARL-CQL" not in m
    assert "80 m / full / oracle data eps=0.3 / QMIX-MARL-CQL" in m
    assert "80 m / full / oracle data eps=0.3 / BC" not in m
    for label in labels:
        vs = s["coordination"][label]
        best = vs["best_heuristic"]
        assert best in ("tdm", "full_reuse", "reward_greedy") and vs["oracle"] == "exhaustive"
        scores = vs["scores"]
        assert scores[best] == max(scores[n] for n in ("tdm", "full_reuse", "reward_greedy"))
        for name, ex in vs["execution"].items():
            assert ex == ("per AP" if name != "C-BC" else
                          "replicated" if "/ full /" in label else "central"), (label, name)
        for name, e in vs["methods"].items():
            assert e["minus"]["mean"] == pytest.approx(scores[name] - scores[best], abs=1e-6)
            if name != "exhaustive":
                h = e["headroom"]
                assert (h["mean"] is None and h["undefined_seeds"] >= 1) or \
                    math.isfinite(h["mean"])
    # the datasets are the oracle's (eps = 0 and eps = 0.3), one per (area, observation, eps)
    assert {d["behaviour"] for d in s["datasets"].values()} == {"exhaustive"}
    assert len(s["datasets"]) == 6
    # the oracle's actions do not depend on what the agents observe: same rates in both
    # observation kinds of one area
    assert m["500 m / local / oracle data / exhaustive"]["score"] == \
        m["500 m / full / oracle data / exhaustive"]["score"]
