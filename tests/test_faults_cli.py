"""Faults and hostile input at the command line (issue 15): output directories never destroy
what the project did not write and are swapped atomically; every path and input is checked
before any work, with one line and exit 2, never a traceback; no flag is silently ignored;
results are strict JSON; Ctrl-C exits 130 with nothing half-written.

Every CLI call here must fail before work: the work functions are replaced by ones that raise
:class:`WorkStarted`, so an input that slips through fails the test at once instead of running
a job.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from experiments import cli, outputs

REPO = Path(__file__).resolve().parents[1]
SMALL_ENV = ["--env", "num_aps=2", "--env", "num_ues=4", "--env", "num_candidates=2",
             "--env", "horizon=5"]
STUDIES = ("ctde", "cql_alpha", "coupling", "dataset_quality", "dataset_size", "dynamic_users",
           "lambda_sweep", "reward_design", "coordination")


class WorkStarted(AssertionError):
    """A CLI got past its input checks and started working."""


@pytest.fixture
def no_work(monkeypatch):
    """Replace the functions where the CLIs' work starts by ones that raise WorkStarted."""
    from experiments import runner
    from jaxrrm import data, behaviour_data

    def refuse(*a, **k):
        raise WorkStarted("work started although the input is invalid")

    for mod, name in ((runner, "evaluate_fixed"), (runner, "dataset"), (runner, "run_variants"),
                      (behaviour_data, "load_or_build"), (behaviour_data, "build_dataset"),
                      (data, "collect")):
        monkeypatch.setattr(mod, name, refuse)
    # --quick sets XLA_FLAGS for the process: keep the worker's value.
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))


def _main(name):
    import importlib

    return importlib.import_module(f"experiments.{name}").main


def _with_small_env(argv):
    """``argv`` plus the small environment's ``--env`` items of the fields it does not set."""
    given = {argv[i + 1].split("=")[0] for i, a in enumerate(argv[:-1]) if a == "--env"}
    pairs = [SMALL_ENV[i:i + 2] for i in range(0, len(SMALL_ENV), 2)]
    return argv + [x for pair in pairs if pair[1].split("=")[0] not in given for x in pair]


def _run_refused(capsys, name, argv):
    argv = _with_small_env(argv)
    rc = _main(name)(argv)
    err = capsys.readouterr().err
    assert rc == 2, (name, argv, err)
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "error" in ln]
    assert len(lines) == 1, err          # one line naming the problem
    return lines[0]


def _bad_inputs(tmp_path):
    from jaxrrm.config import MAX_SEED

    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory")
    return [
        (["--seed", "-1"], "--seed"),
        (["--seed", str(2**32)], "--seed"),
        (["--seed", "x"], "--seed"),
        (["--seed", str(MAX_SEED), "--seeds", "3"], "--seed"),
        (["--seeds", "0"], "--seeds"),
        (["--episodes", "0"], "--episodes"),
        (["--updates", "-5"], "--updates"),
        (["--batch-size", "1.5"], "--batch-size"),
        (["--env", "num_aps=0"], "num_aps"),
        (["--env", "num_aps=true"], "num_aps"),
        (["--env", "tx_power_dbm=1e9"], "tx_power_dbm"),
        (["--env", "tx_power_dbm=true"], "tx_power_dbm"),
        (["--env", "tx_power_dbm=nan"], "tx_power_dbm"),
        (["--env", "bandwidth_hz=inf"], "bandwidth_hz"),
        (["--env", "area_side_m=20"], "infeasible"),
        (["--env", "bogus=1"], "bogus"),
        (["--env", "pf_lambda=0.5", "--env", "pf_lambda=0.6"], "twice"),
        (["--quick", "--preset", "paper"], "--quick"),
        (["--out", str(a_file), "--overwrite"], "not a directory"),
        (["--out", str(a_file / "sub")], "not a directory"),
        (["--out", str(tmp_path)], "already exists"),
        (["--data-dir", str(a_file)], "--data-dir"),
        (["--out", "/proc/jaxrrm-cannot-write/out"], "cannot write"),
    ]


@pytest.mark.parametrize("name", STUDIES)
def test_every_cli_refuses_bad_input_before_work(tmp_path, capsys, no_work, name):
    for argv, needle in _bad_inputs(tmp_path):
        line = _run_refused(capsys, name, argv)
        assert needle in line, (name, argv, line)


@pytest.mark.parametrize("name, argv, needle", [
    ("coupling", ["--values", "5"], "infeasible"),
    ("coordination", ["--areas", "10"], "infeasible"),
    ("dynamic_users", ["--speeds", "5000", "--env", "slot_s=0.2"], "infeasible"),
    ("lambda_sweep", ["--lambdas", "2"], "--lambdas"),
    ("ctde", ["--behaviour", "tdm", "--behaviour-train-steps", "1000"],
     "--behaviour-train-steps"),
])
def test_study_values_checked_before_work(capsys, no_work, name, argv, needle):
    assert needle in _run_refused(capsys, name, argv)


def test_overwrite_refuses_a_directory_the_project_did_not_write(tmp_path, capsys, no_work):
    mine = tmp_path / "my_files"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    for name in ("ctde", "lambda_sweep"):
        line = _run_refused(capsys, name, ["--out", str(mine), "--overwrite"])
        assert "not a jaxrrm results directory" in line
    assert (mine / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_files"]


def _commit(path, overwrite, files):
    out = outputs.OutputDir(path, overwrite=overwrite)
    for name, text in files.items():
        out.file(name).write_text(text)
    return out.commit()


def test_output_dir_marker_and_atomic_swap(tmp_path):
    path = tmp_path / "run"
    _commit(path, False, {"a.txt": "old"})
    assert (path / outputs.RESULTS_MARKER).is_file()
    marker = json.loads((path / outputs.RESULTS_MARKER).read_text())
    assert marker["writer"] == "jaxrrm"
    with pytest.raises(cli.CliError, match="already exists"):
        outputs.OutputDir(path)
    _commit(path, True, {"b.txt": "new"})
    assert sorted(p.name for p in path.iterdir()) == [outputs.RESULTS_MARKER, "b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no .tmp- / .old- left
    # An empty directory may be replaced (nothing to lose).
    empty = tmp_path / "empty"
    empty.mkdir()
    _commit(empty, True, {"c.txt": "x"})
    assert (empty / "c.txt").read_text() == "x"


def test_output_dir_swap_interrupted_keeps_the_old_results(tmp_path, monkeypatch):
    path = tmp_path / "run"
    _commit(path, False, {"a.txt": "old"})
    out = outputs.OutputDir(path, overwrite=True)
    out.file("b.txt").write_text("new")
    real = os.rename
    calls = []

    def rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:          # the new directory renamed in: killed right here
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        out.commit()
    monkeypatch.setattr(os, "rename", real)
    assert (path / "a.txt").read_text() == "old"      # the old results are back in place
    out.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_output_dir_rechecks_at_commit(tmp_path):
    path = tmp_path / "run"
    out = outputs.OutputDir(path)
    out.file("a.txt").write_text("x")
    path.mkdir()                       # the user put a directory there meanwhile
    (path / "mine.txt").write_text("keep")
    with pytest.raises(cli.CliError, match="already exists"):
        out.commit()
    out.abort()
    assert (path / "mine.txt").read_text() == "keep"


def test_results_are_strict_json(tmp_path):
    out = outputs.OutputDir(tmp_path / "run")
    out.write_json("s.json", {"ci95": float("nan"), "x": np.float32(np.inf),
                              "v": np.array([1.0, np.nan]), "n": np.int64(3), "p": Path("a/b")})
    text = out.file("s.json").read_text()

    def refuse(c):
        raise ValueError(f"non-standard JSON constant {c}")

    assert json.loads(text, parse_constant=refuse) == {"ci95": None, "x": None,
                                                      "v": [1.0, None], "n": 3, "p": "a/b"}
    with pytest.raises(TypeError):
        out.write_json("bad.json", {"f": object()})
    out.abort()


def test_collect_refuses_before_collecting(tmp_path, capsys, no_work):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    base = ["--size", "10", "--no-progress"]
    cases = [
        (["--behaviour", "tdm", "--out", str(a_file / "ds")], "not a directory"),
        (["--behaviour", "tdm", "--out", "/proc/jaxrrm-cannot-write/ds"], "cannot write"),
        (["--behaviour", "tdm", "--out", str(user), "--overwrite"], "not a dataset directory"),
        (["--behaviour", "tdm", "--out", str(tmp_path / "d"), "--seed", str(2**32)], "--seed"),
        (["--behaviour", "tdm", "--out", str(tmp_path / "d"), "--train-steps", "100"],
         "--train-steps"),
        (["--behaviour", "tdm", "--out", str(tmp_path / "d"), "--source", "policy"], "--source"),
        (["--behaviour", "sac", "--out", str(tmp_path / "d"), "--epsilon", "0.1"], "--epsilon"),
        (["--behaviour", "sac", "--out", str(tmp_path / "d"), "--source", "policy",
          "--stream-start", "0.5"], "--stream-start"),
        (["--behaviour", "tdm", "--out", str(tmp_path / "d"), "--env", "area_side_m=20"],
         "infeasible"),
        (["--behaviour", "tdm", "--out", str(tmp_path / "d"), "--eval-every", "0"],
         "--eval-every"),
    ]
    for argv, needle in cases:
        assert needle in _run_refused(capsys, "collect", argv + base), argv
    assert (user / "notes.txt").read_text() == "mine"


def test_quick_applies_explicit_sizes(monkeypatch):
    from experiments import ctde, runner

    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
    parser = ctde.build_parser()
    run = runner.resolve(parser.parse_args(["--quick"] + SMALL_ENV), "ctde")
    q = runner.PRESETS["quick"]
    assert (run.seeds, run.episodes, run.updates) == (q.seeds, q.episodes, q.updates)
    run = runner.resolve(parser.parse_args(["--quick", "--seeds", "3", "--episodes", "5",
                                            "--updates", "150"] + SMALL_ENV), "ctde")
    assert (run.seeds, run.episodes, run.updates) == (3, 5, 150)
    assert runner.resolve(parser.parse_args(SMALL_ENV), "ctde").seeds == 16
    from experiments import lambda_sweep

    assert runner.resolve(lambda_sweep.build_parser().parse_args(SMALL_ENV),
                          "lambda_sweep").seeds == runner.STUDY_SEEDS


@pytest.mark.slow
def test_ctrl_c_exits_130_with_nothing_written(tmp_path):
    """Ctrl-C in the middle of the main job (during the dataset's online training or the
    offline training) ends with exit 130 and the message, leaves no output directory and no
    temporary directory behind."""
    out = tmp_path / "out"
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "experiments.ctde", "--quick", "--out", str(out),
           "--data-dir", str(cache), "--learners", "ctde", "bc"] + SMALL_ENV[:6]
    for trigger in ("dataset", "CTDE"):
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        seen = bytearray()

        def read():
            for chunk in iter(lambda: proc.stderr.read1(4096), b""):
                seen.extend(chunk)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        t0 = time.monotonic()
        while trigger.encode() not in seen and proc.poll() is None \
                and time.monotonic() - t0 < 300:
            time.sleep(0.2)
        assert proc.poll() is None, seen.decode(errors="replace")
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=120)
        reader.join(timeout=10)
        text = seen.decode(errors="replace")
        assert rc == 130, text[-2000:]
        assert "interrupted: nothing was written" in text
        assert "Traceback" not in text and "corrupted" not in text
        assert not out.exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], \
            list(tmp_path.iterdir())
        if cache.exists():
            assert not [p for p in cache.iterdir() if p.name.startswith(".")]


def test_review_round_two_paths_and_markers(tmp_path, capsys, no_work, monkeypatch):
    """Holes a second hostile review found: planted marker / meta.json files, the data cache
    inside --out, the current directory as --out, names too long for the atomic write."""
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "thesis.tex").write_text("mine")
    (planted / outputs.RESULTS_MARKER).write_text("")           # an empty marker
    assert "not a jaxrrm results directory" in _run_refused(
        capsys, "ctde", ["--out", str(planted), "--overwrite"])
    (planted / outputs.RESULTS_MARKER).write_text('{"writer": "someone"}')
    assert not outputs.is_results_dir(planted)
    (planted / "meta.json").write_text("{}")                   # a planted dataset meta
    line = _run_refused(capsys, "collect", ["--behaviour", "tdm", "--size", "5", "--out",
                                            str(planted), "--overwrite", "--no-progress"])
    assert "not a dataset directory written by jaxrrm" in line
    assert (planted / "thesis.tex").read_text() == "mine"
    # the dataset cache inside the output directory
    out = tmp_path / "R"
    assert "inside --out" in _run_refused(capsys, "ctde", ["--out", str(out), "--data-dir",
                                                           str(out / "cache")])
    assert not out.exists()
    # the current directory and its parents; a name too long for the hidden siblings
    monkeypatch.chdir(tmp_path)
    for bad in (".", "", "./", ".."):
        assert "current directory" in _run_refused(capsys, "ctde", ["--out", bad,
                                                                   "--overwrite"])
    assert "too long" in _run_refused(capsys, "ctde", ["--out", "x" * 240])
    assert "too long" in _run_refused(capsys, "collect", ["--behaviour", "tdm", "--size", "5",
                                                          "--out", "y" * 240, "--no-progress"])


@pytest.mark.parametrize("name, argv, needle", [
    ("ctde", ["--cql-alpha", "1e39"], "--cql-alpha"),
    ("cql_alpha", ["--alphas", "1e39"], "--alphas"),
    ("ctde", ["--learners", "bc", "--cql-alpha", "7"], "only for the CQL learners"),
    ("ctde", ["--learners", "bc", "--backbone", "dqn", "--gamma", "0.3"],
     "--backbone, --gamma: only for the CQL learners"),
    ("ctde", ["--behaviour", "sac", "--dataset-size", "1000", "--behaviour-train-steps", "10"],
     "less than the dataset size"),
    ("ctde", ["--env", "horizon=3000000000"], "horizon"),
    ("ctde", ["--env", "min_drop_tries=100000000"], "min_drop_tries"),
    ("ctde", ["--hidden", "999999999,9"], "--hidden"),
])
def test_review_round_two_flags(capsys, no_work, name, argv, needle):
    assert needle in _run_refused(capsys, name, argv)


@pytest.mark.parametrize("name", ["env_throughput", "train_throughput", "scaling",
                                  "distributed_scaling", "gpu_suite", "report"])
def test_benchmark_clis_refuse_bad_out_and_counts_before_work(tmp_path, capsys, name):
    import importlib

    main = importlib.import_module(f"benchmarks.{name}").main
    user = tmp_path / "notes.txt"
    user.write_text("mine")
    for argv, needle in ([["--out", str(user)], "was not written by this benchmark"],
                         [["--out", str(tmp_path)], "is a directory"],
                         [["--out", str(user / "x.json")], "not a directory"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and needle in err and "Traceback" not in err, (argv, err)
    assert user.read_text() == "mine"
    count_flag = {"env_throughput": "--horizon", "train_throughput": "--batch",
                  "scaling": "--episodes", "distributed_scaling": "--seeds",
                  "gpu_suite": "--budget-s"}.get(name)
    if count_flag:
        with pytest.raises(SystemExit) as e:
            main([count_flag, "-1"])
        assert e.value.code == 2 and count_flag in capsys.readouterr().err


@pytest.mark.slow
def test_persistent_compilation_cache(tmp_path):
    """The CLIs keep JAX's compilation cache between runs (on by default; --no-compile-cache
    and JAXRRM_NO_COMPILE_CACHE=1 turn it off); the second run's results are the same."""
    cache = tmp_path / "jaxcache"
    env = {k: v for k, v in os.environ.items() if k != "JAXRRM_NO_COMPILE_CACHE"}
    env["JAXRRM_COMPILE_CACHE"] = str(cache)
    cmd = [sys.executable, "-m", "experiments.collect", "--behaviour", "exhaustive", "--size",
           "40", "--no-progress"] + SMALL_ENV
    r1 = subprocess.run(cmd + ["--out", str(tmp_path / "a"), "--no-compile-cache"], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=300)
    assert r1.returncode == 0, r1.stderr[-2000:]
    assert not cache.exists()
    r2 = subprocess.run(cmd + ["--out", str(tmp_path / "b")], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert cache.is_dir() and any(cache.iterdir())
    r3 = subprocess.run(cmd + ["--out", str(tmp_path / "c")], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)
    assert r3.returncode == 0, r3.stderr[-2000:]
    from jaxrrm import data

    a, b, c = (data.load(tmp_path / n)[0] for n in "abc")
    np.testing.assert_array_equal(a.reward, b.reward)
    np.testing.assert_array_equal(b.reward, c.reward)


def test_ctrl_c_inside_a_finalizer_still_interrupts(tmp_path, capsys):
    # A Ctrl-C that lands while Python runs a finalizer (JAX's gc callback, say) raises its
    # KeyboardInterrupt there, where Python prints and drops it; the run must still stop
    # (exit 130, nothing written) instead of going on to write its outputs.
    import argparse

    marker = tmp_path / "written"

    class Finalized:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)  # the handler runs here, inside the finalizer

    def run(args):
        f = Finalized()
        del f
        for _ in range(1000):  # the next instructions of the main thread
            time.sleep(0.001)
        marker.write_text("the run went on after the interrupt")

    hook, handler = sys.unraisablehook, signal.getsignal(signal.SIGINT)
    rc = cli.cli_main(lambda: argparse.ArgumentParser(), run, [], interrupted="stopped")
    assert rc == 130 and not marker.exists()
    assert "stopped" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is handler and sys.unraisablehook is hook
