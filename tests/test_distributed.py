"""jaxrrm.distributed: sharded rollouts and training equal the unsharded ones; clear errors; a
real two-process jax.distributed run (CPU, Gloo collectives) matches one process.

The device count of a JAX process is fixed when its backend starts, so the multi-device checks
run in subprocesses started with ``--xla_force_host_platform_device_count=4``; the references are
computed meanwhile in this process (one device), so the two overlap on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

# Tiny settings shared by this process and the subprocesses (one compilation each).
ENV_KW = dict(num_aps=2, num_ues=6, num_candidates=2, horizon=10)
SEEDS, EPISODES = 8, 4


def _env(devices: int = 1) -> dict:
    """Environment of a subprocess: this process's XLA flags (same numerics), ``devices`` CPUs."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    if devices > 1:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    env["XLA_FLAGS"] = " ".join(flags)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS), env.get("PYTHONPATH", "")])
    env["JAX_PLATFORMS"] = "cpu"
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(k, None)
    return env


def _finish(procs, timeout=600):
    """Wait for subprocesses; kill them all if one fails or times out; return their stdouts."""
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            if p.returncode != 0:
                raise AssertionError(f"subprocess {p.args!r} failed ({p.returncode}):\n"
                                     f"{err[-4000:]}")
            outs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return outs


# --------------------------------------------------------------------------------------------
# Shared tiny workloads (run here unsharded and in the subprocesses sharded)
# --------------------------------------------------------------------------------------------


def tiny_env():
    from jaxrrm import EnvConfig, EnvParams

    cfg = EnvConfig(**ENV_KW)
    return cfg, EnvParams.create(cfg)


def tiny_trainer(num_seeds: int):
    """A tiny CTDE-CQL trainer and a synthetic dataset (random rows: numerics, not learning)."""
    from jaxrrm import data, train
    from jaxrrm.algos import cql
    from jaxrrm.algos.netconfig import NetConfig

    cfg, params = tiny_env()
    net = NetConfig(hidden=(16, 16), shared=False)
    lc = cql.CQLConfig(paradigm="ctde", critic_net=net, actor_net=net)
    tc = train.TrainConfig(num_updates=20, batch_size=16, chunk_size=10, num_seeds=num_seeds,
                           eval_episodes=2)
    rng = np.random.default_rng(0)
    fields = {}
    for name, (shape, dt) in data.field_specs(cfg, 256).items():
        if dt == np.float32:
            fields[name] = rng.normal(size=shape).astype(dt)
        elif dt == bool:
            fields[name] = np.full(shape, "mask" in name)
        else:
            fields[name] = rng.integers(0, cfg.num_actions, size=shape).astype(dt)
    fields["rates_mbps"] = np.abs(fields["rates_mbps"])    # rates are not negative
    return train.make_train(cfg, params, lc, tc), data.Transitions(**fields)


def run_workload(mesh=None) -> dict:
    """Rollouts, evaluation and two training chunks; sharded over ``mesh`` when given."""
    import jax
    import jax.numpy as jnp

    from jaxrrm import baselines, distributed as dist, evaluate

    cfg, params = tiny_env()
    pol = baselines.make("full_reuse", cfg)
    keys = evaluate.seed_keys(0, SEEDS)
    out = {}
    rates, ret = dist.rollout_seeds(keys, pol, params, cfg, EPISODES, mesh)
    out["seed_rates"], out["seed_returns"] = np.asarray(rates), np.asarray(ret)
    r = dist.rollout(jax.random.key(7), pol, params, cfg, SEEDS, mesh)
    out["ep_rates"], out["ep_rewards"] = np.asarray(r.ue_rates_mbps), np.asarray(r.rewards)
    from jaxrrm import data  # dataset collection's episode chunk (one episode per key)

    chunk = (data.rollout_chunk(keys, pol, params, cfg) if mesh is None
             else data.sharded_rollout_chunk(keys, pol, params, cfg, mesh))
    out["chunk_actions"] = np.asarray(chunk["actions"])
    out["chunk_rates"] = np.asarray(chunk["info"]["rates_mbps"])
    if mesh is not None:  # 6 seeds on 4 devices: padded to 8, 2 rows dropped
        rates6, _ = dist.rollout_seeds(keys[:6], pol, params, cfg, EPISODES, mesh, pad=True)
        out["seed_rates_pad6"] = np.asarray(rates6)

    tr, ds = tiny_trainer(4)
    seed_keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(4))
    if mesh is None:
        init, run_chunk, ds = tr.init, tr.run_chunk, jax.device_put(ds)
    else:
        st = dist.shard_trainer(tr, mesh)
        init, run_chunk, ds = st.init, st.run_chunk, dist.put_replicated(ds, mesh)
    state = init(seed_keys)
    for c in range(2):
        state, metrics = run_chunk(state, ds)
        for k, v in jax.device_get(metrics).items():
            out[f"metric_{k}_{c}"] = np.asarray(v)
    if mesh is not None:
        from jax.sharding import PartitionSpec

        out["state_split"] = np.asarray(all(
            x.sharding.spec == PartitionSpec("batch") for x in jax.tree.leaves(state)))
    for i, leaf in enumerate(jax.tree.leaves(dist.gather(state.learner.params))):
        out[f"param_{i}"] = np.asarray(leaf)
    # (The sharded greedy evaluation is checked by the two-process test.)
    return out


SHARDED_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import jax
    from jaxrrm import distributed as dist
    import test_distributed as t
    out = {"devices": np.asarray(len(jax.devices()))}
    mesh = dist.make_mesh()
    errors = {}
    from jaxrrm import baselines, evaluate
    cfg, params = t.tiny_env()
    try:
        dist.rollout_seeds(evaluate.seed_keys(0, 6), baselines.make("tdm", cfg), params, cfg,
                           t.EPISODES, mesh)
    except ValueError as e:
        errors["seeds"] = str(e)
    try:
        dist.shard_trainer(t.tiny_trainer(6)[0], mesh)
    except ValueError as e:
        errors["num_seeds"] = str(e)
    out.update(t.run_workload(mesh))
    np.savez(sys.argv[1], **out)
    print(repr(errors))
""")


@pytest.fixture(scope="module")
def sharded_vs_unsharded(tmp_path_factory):
    path = tmp_path_factory.mktemp("dist") / "sharded.npz"
    proc = subprocess.Popen([sys.executable, "-c", SHARDED_SCRIPT, str(path)], env=_env(4),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ref = run_workload(None)  # meanwhile, the unsharded reference here (one device)
    finally:
        (stdout,) = _finish([proc])
    import ast

    errors = ast.literal_eval(stdout.strip().splitlines()[-1])
    with np.load(path) as z:
        sharded = {k: z[k] for k in z.files}
    return ref, sharded, errors


@pytest.mark.slow
def test_sharded_rollouts_equal_unsharded(sharded_vs_unsharded):
    ref, sh, _ = sharded_vs_unsharded
    assert int(sh["devices"]) == 4
    # Equal to float32 rounding (XLA CPU compiles each per-device batch size on its own; most
    # entries are bitwise equal). Different keys would give differences of order 1..100.
    np.testing.assert_array_equal(sh["chunk_actions"], ref["chunk_actions"])
    for k in ("seed_rates", "ep_rates", "seed_returns", "ep_rewards", "chunk_rates"):
        assert sh[k].shape == ref[k].shape, k
        np.testing.assert_allclose(sh[k], ref[k], rtol=1e-5, atol=1e-5, err_msg=k)
    assert np.mean(sh["seed_rates"] == ref["seed_rates"]) > 0.5
    # Padding: 6 seeds on 4 devices run as 8 and give the first 6 rows (bitwise: the same
    # program as the 8-seed run).
    np.testing.assert_array_equal(sh["seed_rates_pad6"], sh["seed_rates"][:6])


@pytest.mark.slow
def test_sharded_training_equals_unsharded(sharded_vs_unsharded):
    ref, sh, _ = sharded_vs_unsharded
    assert bool(sh["state_split"])  # every leaf of the state stays split over the seeds
    keys = [k for k in ref if k.startswith(("metric_", "param_"))]
    assert len(keys) > 20 and set(keys) <= set(sh)
    for k in keys:
        assert sh[k].shape == ref[k].shape and sh[k].shape[0] == 4, k
        if ref[k].dtype == bool:
            np.testing.assert_array_equal(sh[k], ref[k], err_msg=k)
        else:  # float32 rounding of a partitioned program (see jaxrrm.distributed: Equality)
            np.testing.assert_allclose(sh[k], ref[k], rtol=1e-4, atol=1e-6, err_msg=k)
    # The learned networks are not all identical across seeds (the seeds really differ).
    assert not np.allclose(ref["param_0"][0], ref["param_0"][1])


@pytest.mark.slow
def test_indivisible_counts_are_clear_errors(sharded_vs_unsharded):
    _, _, errors = sharded_vs_unsharded
    assert "seeds=6" in errors["seeds"] and "4 devices" in errors["seeds"]
    assert "pad=True" in errors["seeds"]
    assert "num_seeds=6" in errors["num_seeds"] and "4 devices" in errors["num_seeds"]


# --------------------------------------------------------------------------------------------
# A real two-process run (jax.distributed on localhost, Gloo CPU collectives)
# --------------------------------------------------------------------------------------------


def small_experiment(argv) -> dict:
    """A miniature of experiments.ctde: baselines over seeds (relative to TDM) and a tiny
    four-seed CQL training; the writer process writes summary.json. Returns the summary."""
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    from experiments import cli_distributed
    from jaxrrm import distributed as dist

    cli_distributed.add_arguments(p)
    args = p.parse_args(argv)
    mesh = cli_distributed.setup(args)  # before any JAX work

    import jax

    from jaxrrm import baselines, evaluate, train

    cfg, params = tiny_env()
    keys = evaluate.seed_keys(0, SEEDS)
    per_seed = {}
    for name in ("tdm", "full_reuse"):
        rates, _ = dist.rollout_seeds(keys, baselines.make(name, cfg), params, cfg, EPISODES,
                                      mesh)
        per_seed[name] = evaluate.seed_metrics(dist.gather(rates), params.score_mu)
    evaluate.add_relative(per_seed, "tdm")
    summary = {name: evaluate.summarize(m) for name, m in per_seed.items()}
    tr, ds = tiny_trainer(4)
    eval_keys = train.eval_keys_for(jax.random.key(1), 4)
    if mesh is None:  # the library's own training loop
        res = tr.train(jax.random.key(1), ds, eval_keys=eval_keys)
        final, q = res.final, res.history["metrics"]["q"][-1]
    else:
        st = dist.shard_trainer(tr, mesh)
        state, data_on_mesh = st.init(jax.vmap(lambda i: jax.random.fold_in(
            jax.random.key(1), i))(np.arange(4))), dist.put_replicated(ds, mesh)
        for _ in range(tr.train_cfg.num_chunks):
            state, m = st.run_chunk(state, data_on_mesh)
        final, q = st.evaluate(state.learner, eval_keys), np.mean(np.asarray(m["q"]), axis=1)
    summary["cql_ctde"] = evaluate.summarize(final)
    summary["cql_ctde"]["last_chunk_q"] = [float(x) for x in q]
    summary["_layout"] = {"processes": jax.process_count(),
                          "devices": 1 if mesh is None else dist.num_devices(mesh)}
    if dist.is_writer():
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    return summary


TWO_PROCESS_SCRIPT = textwrap.dedent("""
    import sys
    import test_distributed as t
    t.small_experiment(sys.argv[1:])
""")


def _free_port() -> int:
    """A free TCP port below Linux's ephemeral range (32768+), so that no outgoing connection
    of another program can take it between this check and the coordinator's bind."""
    import random

    rng = random.Random(os.getpid())
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        with socket.socket(socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET) as s:
            try:
                s.bind(("::" if socket.has_ipv6 else "", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port in 20000..31999")


def _launch_two(out_dir):
    port = _free_port()
    return [subprocess.Popen(
        [sys.executable, "-c", TWO_PROCESS_SCRIPT, "--out", str(out_dir),
         "--coordinator", f"localhost:{port}", "--num-processes", "2", "--process-id", str(i)],
        env=_env(1), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]


@pytest.mark.slow
def test_two_process_run_matches_single_process(tmp_path):
    procs = _launch_two(tmp_path / "multi")
    try:  # meanwhile, the single-process run here (no flags: the default; shares compilations)
        ref = json.loads(json.dumps(small_experiment(["--out", str(tmp_path / "single")])))
    finally:
        try:
            outs = _finish(procs)
        except AssertionError as first:
            # One unexplained start-up failure of the localhost pair was seen in ~10 runs on a
            # heavily loaded machine; relaunch once on a fresh port (a second failure fails
            # the test, with both errors).
            import shutil

            shutil.rmtree(tmp_path / "multi", ignore_errors=True)
            try:
                outs = _finish(_launch_two(tmp_path / "multi"))
            except AssertionError as second:
                raise AssertionError(f"{first}\n--- relaunch ---\n{second}") from None
    s0, s1 = (json.loads(o.strip().splitlines()[-1]) for o in outs)
    assert s0.pop("_layout") == {"processes": 2, "devices": 2}
    assert s1.pop("_layout") == {"processes": 2, "devices": 2}
    assert ref.pop("_layout") == {"processes": 1, "devices": 1}
    # Only process 0 wrote, and what it wrote is what every process computed.
    written = json.loads((tmp_path / "multi" / "summary.json").read_text())
    assert written.pop("_layout") == {"processes": 2, "devices": 2}
    assert written == s0 == s1
    assert sorted(p.name for p in (tmp_path / "multi").iterdir()) == ["summary.json"]
    # Every metric equals the single-process run's to float32 rounding: baselines (8 seeds on
    # 2 devices in 2 processes) and the four-seed training (two seeds per process).
    assert set(s0) == set(ref)
    assert s0["full_reuse"]["relative_score"]["mean"] != pytest.approx(1.0)
    for name, metrics in ref.items():
        assert set(s0[name]) == set(metrics), name
        for k, v in metrics.items():
            got = s0[name][k]
            if isinstance(v, dict):
                for stat in ("mean", "ci95"):
                    assert got[stat] == pytest.approx(v[stat], rel=1e-4, abs=1e-5), (name, k)
            else:
                assert got == pytest.approx(v, rel=1e-4, abs=1e-6), (name, k)


# --------------------------------------------------------------------------------------------
# In-process (one device): defaults, validation, command line
# --------------------------------------------------------------------------------------------


@pytest.fixture
def no_dist_env(monkeypatch):
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(k, raising=False)


def test_default_is_one_process_one_device_no_flags(no_dist_env):
    import jax

    from experiments import cli_distributed
    from jaxrrm import distributed as dist

    p = argparse.ArgumentParser()
    cli_distributed.add_arguments(p)
    args = p.parse_args([])
    assert cli_distributed.setup(args) is None
    assert not jax.distributed.is_initialized()
    assert dist.is_writer() and jax.process_count() == 1
    assert cli_distributed.describe(None)["mesh_devices"] == 1
    # --devices 1 is the same default; a one-device mesh is still available explicitly.
    assert cli_distributed.setup(p.parse_args(["--devices", "1"])) is None
    mesh = dist.make_mesh()
    assert mesh.axis_names == ("batch",) and dist.num_devices(mesh) == 1


def test_command_line_options():
    from experiments import cli_distributed

    p = argparse.ArgumentParser()
    cli_distributed.add_arguments(p)
    a = p.parse_args(["--devices", "all", "--coordinator", "10.0.0.1:1234", "--num-processes",
                      "2", "--process-id", "1", "--auto-cluster"])
    assert (a.devices, a.coordinator, a.num_processes, a.process_id, a.auto_cluster) == (
        "all", "10.0.0.1:1234", 2, 1, True)
    assert p.parse_args(["--devices", "8"]).devices == 8
    for bad in (["--devices", "0"], ["--devices", "x"], ["--num-processes", "0"],
                ["--process-id", "-1"]):
        with pytest.raises(SystemExit):
            p.parse_args(bad)


def test_initialize_validates_before_touching_jax(no_dist_env, monkeypatch):
    from jaxrrm import distributed as dist

    assert dist.initialize() is False
    assert dist.initialize(num_processes=1) is False
    with pytest.raises(ValueError, match="coordinator address"):
        dist.initialize(num_processes=2, process_id=0)
    with pytest.raises(ValueError, match="process id"):
        dist.initialize(coordinator_address="localhost:1", num_processes=2)
    with pytest.raises(ValueError, match="allowed range is 0..1"):
        dist.initialize(coordinator_address="localhost:1", num_processes=2, process_id=2)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES"):
        dist.initialize()
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    with pytest.raises(ValueError, match="coordinator address"):
        dist.initialize()


def test_too_many_devices_says_how_to_get_them():
    from jaxrrm import distributed as dist

    with pytest.raises(ValueError, match="xla_force_host_platform_device_count=4"):
        dist.make_mesh(4)
    with pytest.raises(ValueError, match="num_devices=0"):
        dist.make_mesh(0)


def test_check_divisible_message():
    from types import SimpleNamespace

    from jaxrrm import distributed as dist

    mesh = SimpleNamespace(devices=np.empty(4, dtype=object))  # only .devices.size is used
    dist.check_divisible(8, mesh, "episodes")
    msg = r"episodes=10 is not a multiple of the 4 devices.*12 or 8"
    with pytest.raises(ValueError, match=msg):
        dist.check_divisible(10, mesh, "episodes")
    assert dist.padded_size(10, mesh) == 12 and dist.padded_size(8, mesh) == 8
