"""The entry points: experiments.ctde end to end on a tiny setting, its errors, and the benchmark."""

import json
import math

import numpy as np
import pytest

from experiments import ctde
from experiments.cli import CliError
from experiments.outputs import OutputDir
from experiments.tables import format_table

TINY = ["--seeds", "3", "--episodes", "4", "--env", "horizon=12", "--env", "num_aps=2",
        "--env", "num_ues=6", "--env", "num_candidates=2", "--no-progress", "--no-plots",
        "--behaviour", "full_reuse", "--dataset-size", "400", "--updates", "20",
        "--batch-size", "16", "--hidden", "16,16"]
LEARNER_NAMES = {"CTDE-MARL-CQL", "I-MARL-CQL", "C-MARL-CQL", "BC"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("datasets")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("ctde") / "run"
    assert ctde.main(TINY + ["--out", str(out), "--data-dir", str(data_dir)]) == 0
    return out


def test_ctde_writes_summary(tiny_run):
    files = {p.name for p in tiny_run.iterdir()}
    assert {"config.json", "summary.json", "summary.csv", "per_seed.json",
            "learning_curves.json", "marl_eval.json", ".jaxrrm-results.json"} <= files
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert summary["seeds"] == 3
    methods = summary["methods"]
    assert set(methods) == {"tdm", "random", "full_reuse", "max_sinr", "reward_greedy",
                            "exhaustive", "behaviour (full_reuse)"} | LEARNER_NAMES
    # every method against the best heuristic, paired; headroom relative to the oracle
    vs = summary["versus_best_heuristic"]
    best = vs["best_heuristic"]
    per_seed = json.loads((tiny_run / "per_seed.json").read_text())
    assert best in {"random", "full_reuse", "max_sinr", "reward_greedy", "tdm"}
    assert best == max((n for n in methods if n in {"random", "full_reuse", "max_sinr",
                                                    "reward_greedy", "tdm"}),
                       key=lambda n: methods[n]["score"]["mean"])
    assert vs["oracle"] == "exhaustive" and best not in vs["methods"]
    assert "headroom" not in vs["methods"]["exhaustive"]
    for name in LEARNER_NAMES | {"exhaustive"}:
        e = vs["methods"][name]
        diff = methods[name]["score"]["mean"] - methods[best]["score"]["mean"]
        assert e["minus"]["mean"] == pytest.approx(diff, rel=1e-6, abs=1e-6)
        if name == "exhaustive":
            continue
        # defined (finite) exactly when the oracle beats the heuristic on every seed
        oracle_leads = all(o > h for o, h in zip(per_seed["exhaustive"]["score"],
                                                  per_seed[best]["score"]))
        if oracle_leads:
            assert np.isfinite(e["headroom"]["mean"])
        else:
            assert e["headroom"]["mean"] is None and e["headroom"]["undefined_seeds"] >= 1
    # The behaviour policy is full_reuse itself: same test episodes, same numbers.
    assert methods["behaviour (full_reuse)"]["score"] == methods["full_reuse"]["score"]
    # Every learner trained (train time recorded) and has a learning curve per seed.
    curves = json.loads((tiny_run / "learning_curves.json").read_text())
    assert set(curves) == LEARNER_NAMES
    for name in LEARNER_NAMES:
        assert summary["train_seconds"][name] > 0
        assert curves[name]["updates"][-1] == 20 and len(curves[name]["score"][-1]) == 3
    assert summary["dataset"]["built"] is True
    # rliable's robust companions beside the Student-t interval, from the per-seed values
    from jaxrrm import metrics

    for name in methods:
        sc = methods[name]["score"]
        x = per_seed[name]["score"]
        assert sc["iqm"] == pytest.approx(metrics.iqm(x))
        assert sc["iqm_ci95"][0] <= sc["iqm"] <= sc["iqm_ci95"][1]
        assert sc["mean_boot_ci95"][0] <= sc["mean"] <= sc["mean_boot_ci95"][1]
    for name in LEARNER_NAMES:
        assert vs["methods"][name]["probability_of_improvement"] == pytest.approx(
            metrics.probability_of_improvement(per_seed[name]["score"], per_seed[best]["score"]))
    # marl-eval's layout: env -> task -> algorithm -> run_<seed> -> step_<v> / absolute_metrics
    me = json.loads((tiny_run / "marl_eval.json").read_text())
    (task, algos), = me["jaxrrm"].items()
    assert task == "2ap-6ue-500m-umi-pf" and set(algos) == set(methods)
    for name in methods:
        assert [algos[name][f"run_{s}"]["absolute_metrics"]["score"][0] for s in range(3)] == \
            pytest.approx(per_seed[name]["score"])
    for name in LEARNER_NAMES:
        run0 = algos[name]["run_0"]
        steps = [run0[k]["step_count"] for k in run0 if k.startswith("step_")]
        assert steps == curves[name]["updates"]
        assert run0[f"step_{len(steps) - 1}"]["score"] == [curves[name]["score"][-1][0]]
    for name, m in methods.items():
        for key in ("sum_rate", "p5_rate", "score", "relative_score"):
            assert math.isfinite(m[key]["mean"]) and m[key]["ci95"] >= 0, (name, key)
    # TDM is the reference of the relative score, seed by seed.
    assert methods["tdm"]["relative_score"]["mean"] == pytest.approx(1.0)
    assert methods["tdm"]["relative_score"]["ci95"] == pytest.approx(0.0, abs=1e-12)
    # The score is sum + mu * p5 seed by seed, so also in the mean.
    mu = summary["score_mu"]
    assert mu == 6
    for m in methods.values():
        assert m["score"]["mean"] == pytest.approx(m["sum_rate"]["mean"] + mu * m["p5_rate"]["mean"],
                                                   rel=1e-9)
    per_seed = json.loads((tiny_run / "per_seed.json").read_text())
    assert len(per_seed["full_reuse"]["score"]) == 3
    assert np.mean(per_seed["full_reuse"]["score"]) == pytest.approx(
        methods["full_reuse"]["score"]["mean"])
    # No temporary directories are left beside the output.
    assert [p.name for p in tiny_run.parent.iterdir()] == ["run"]


def test_ctde_refuses_existing_output(tiny_run, capsys):
    assert ctde.main(TINY + ["--out", str(tiny_run)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_ctde_reuses_cached_dataset(tiny_run, data_dir, tmp_path):
    out = tmp_path / "again"
    assert ctde.main(TINY + ["--out", str(out), "--data-dir", str(data_dir), "--learners", "bc",
                             "--baselines", "tdm"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    first = json.loads((tiny_run / "summary.json").read_text())
    assert summary["dataset"]["built"] is False
    assert summary["dataset"]["fingerprint"] == first["dataset"]["fingerprint"]
    assert set(summary["methods"]) == {"tdm", "behaviour (full_reuse)", "BC"}
    # Same seed, same data, same test keys: the baseline numbers repeat exactly.
    assert summary["methods"]["tdm"] == first["methods"]["tdm"]


@pytest.mark.parametrize("flags, message", [
    (["--env", "num_aps=0"], "num_aps"),
    (["--env", "pf_beta=1.5"], "pf_beta"),
    (["--env", "bogus=1"], "unknown field"),
    (["--env", "horizon"], "FIELD=VALUE"),
    (["--env", "reassociation_slots=abc"], "integer"),
    (["--env", "horizon=24"], "given twice"),
])
def test_ctde_bad_settings_exit_cleanly(tmp_path, capsys, flags, message):
    assert ctde.main(TINY + flags + ["--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("flags, message", [
    (["--seeds", "0"], "positive integer"),
    (["--hidden", "64,0"], "positive widths"),
    (["--hidden", "wide"], "widths like"),
    (["--cql-alpha", "-1"], "a number in [0, 1e+06]"),
    (["--learners", "vdn"], "invalid choice"),
    (["--behaviour", "oracle"], "invalid choice"),
])
def test_ctde_bad_flag_is_argparse_error(capsys, flags, message):
    assert ctde.main(flags) == 2

    assert message in capsys.readouterr().err


def test_output_dir_is_atomic(tmp_path):
    out = OutputDir(tmp_path / "o")
    out.write_json("a.json", {"x": 1})
    assert not (tmp_path / "o").exists()  # nothing final before commit
    out.commit()
    assert json.loads((tmp_path / "o" / "a.json").read_text()) == {"x": 1}
    with pytest.raises(CliError):
        OutputDir(tmp_path / "o")
    failed = OutputDir(tmp_path / "p")
    failed.abort()
    assert list(tmp_path.iterdir()) == [tmp_path / "o"]


def test_format_table_has_every_method():
    stat = {"mean": 1.0, "ci95": 0.1}
    table = format_table({"a": {"sum_rate": stat, "score": stat}, "bb": {"sum_rate": stat}})
    lines = table.splitlines()
    assert len(lines) == 4 and lines[2].startswith("a ") and lines[3].startswith("bb")
    assert "1.00 ± 0.10" in lines[2]


def test_env_throughput_benchmark_smoke(tmp_path):
    from benchmarks import env_throughput

    out = tmp_path / "bench.json"
    assert env_throughput.main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == "env_throughput"
    assert [r["episodes"] for r in result["jax"]] == [1, 8]
    assert all(r["steps_per_s"] > 0 and r["compile_s"] > 0 for r in result["jax"])
    assert result["numpy"][0]["batched"] is False and result["numpy"][0]["steps_per_s"] > 0
    assert result["machine"]["jax"] == result["jax_version"]
    # The report renders recorded runs (quick ones are left out of RESULTS.md).
    from benchmarks import report

    assert "No runs recorded yet." in report.render(tmp_path)
    result["config"]["quick"] = False
    (tmp_path / "full.json").write_text(json.dumps(result))
    text = report.render(tmp_path)
    rows = [line for line in text.splitlines() if line.startswith("| 1 |") or
            line.startswith("| 8 |")]
    assert len(rows) == 2
    assert f"{result['jax'][1]['steps_per_s']:,.0f}" in rows[1]


COLLECT_ENV = ["--env", "horizon=10", "--env", "num_aps=2", "--env", "num_ues=6",
               "--env", "num_candidates=2", "--no-progress"]


def test_collect_writes_a_dataset_that_loads(tmp_path, capsys):
    from experiments import collect
    from jaxrrm import EnvConfig, data

    out = tmp_path / "ds"
    assert collect.main(["--behaviour", "random_walk", "--size", "25", "--seed", "3",
                         "--out", str(out)] + COLLECT_ENV) == 0
    cfg = EnvConfig(horizon=10, num_aps=2, num_ues=6, num_candidates=2)
    ds, meta = data.load(out, expected_cfg=cfg)
    assert ds.size == 25 and meta["behaviour"] == "random_walk"
    assert int(ds.episode.max()) == 2  # 25 steps of 10-slot episodes: 3 episodes, last partial
    # Refuses to overwrite, with a message and no traceback.
    assert collect.main(["--behaviour", "random_walk", "--size", "5", "--out", str(out)]
                        + COLLECT_ENV) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--behaviour", "bogus", "--size", "5"], "allowed are random_walk"),
    (["--behaviour", "random", "--size", "5", "--epsilon", "2"], "epsilon"),
])
def test_collect_bad_input(tmp_path, capsys, flags, message):
    from experiments import collect

    assert collect.main(flags + ["--out", str(tmp_path / "x")] + COLLECT_ENV) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_collect_rejects_non_positive_size(tmp_path, capsys):
    from experiments import collect

    assert collect.main(["--behaviour", "random", "--size", "0",
                         "--out", str(tmp_path / "x")]) == 2
    assert "positive integer" in capsys.readouterr().err


@pytest.mark.slow
def test_collect_online_learner_stream_slice(tmp_path):
    """dqn: train one chunk on a tiny config, keep the last 1000 transitions of its stream."""
    from experiments import collect
    from jaxrrm import data

    out = tmp_path / "dqn"
    assert collect.main(["--behaviour", "dqn", "--size", "1000", "--train-steps", "6400",
                         "--eval-episodes", "2", "--out", str(out)] + COLLECT_ENV) == 0
    ds, meta = data.load(out)
    bc = meta["behaviour_config"]
    assert ds.size == 1000 and meta["behaviour"] == "dqn" and bc["source"] == "stream"
    assert bc["train_transitions"] == 6400 and len(bc["learning_curve"]) == 1
    # The last 1000 of 6400 stream rows (32 envs x 200 steps): the slice starts at a whole step.
    assert bc["stream_start"] == pytest.approx(168 / 200)
    assert "eval_score" in bc["learning_curve"][-1]
    # Stream rows are step-major: consecutive rows are different envs of the same step.
    assert int(ds.t[0]) == int(ds.t[1]) and int(ds.episode[0]) != int(ds.episode[1])


def test_collect_online_size_beyond_training_is_refused(tmp_path, capsys):
    from experiments import collect

    assert collect.main(["--behaviour", "sac", "--size", "7000", "--train-steps", "6400",
                         "--out", str(tmp_path / "x")] + COLLECT_ENV) == 2
    assert "--train-steps" in capsys.readouterr().err
