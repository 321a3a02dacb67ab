"""Shared pytest set-up for the jaxrrm test suite.

Compile time dominates this suite: the tests run tiny configurations for a few slots, but every
new (function, static configuration) pair is an XLA compilation, which with LLVM's default
optimisation takes several seconds for a scanned rollout on a 2-core CPU. Lowering the XLA CPU
backend's optimisation level makes compilation about 5x faster and only slows the (negligible)
run time of these small programs; numerics are IEEE float32 either way (no fast-math). Set
``JAXRRM_TEST_FULL_OPT=1`` to test with the default optimisation level instead.

The flag must be in ``XLA_FLAGS`` before the JAX backend starts, i.e. before the first
computation, which is why it is set here, at import time of the conftest.
"""

from __future__ import annotations

import os

if os.environ.get("JAXRRM_TEST_FULL_OPT", "0") in ("", "0"):
    _flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in _flags:
        os.environ["XLA_FLAGS"] = (_flags + " --xla_backend_optimization_level=0").strip()

# The CLIs' persistent compilation cache stays off in tests run in-process (it is global to the
# process); tests/test_faults_cli.py turns it on in a subprocess.
os.environ.setdefault("JAXRRM_NO_COMPILE_CACHE", "1")

import jax  # noqa: E402
import pytest  # noqa: E402

from jaxrrm import EnvConfig, EnvParams, env  # noqa: E402

try:  # keep property tests short and deterministic across runs
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "jaxrrm", deadline=None, derandomize=True, print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    settings.load_profile("jaxrrm")
except ImportError:  # pragma: no cover - hypothesis is a dev dependency
    pass

#: The small configuration most tests share (one compilation per jitted function per process).
SMALL_CFG = EnvConfig(num_aps=3, num_ues=12, num_candidates=3, horizon=20)

#: Jitted reset / step with the configuration static; jax caches one executable per config.
reset_jit = jax.jit(env.reset, static_argnums=(2,))
step_jit = jax.jit(env.step, static_argnums=(4,))


@pytest.fixture(scope="session")
def small_cfg() -> EnvConfig:
    return SMALL_CFG


@pytest.fixture(scope="session")
def small_params() -> EnvParams:
    return EnvParams.create(SMALL_CFG)


@pytest.fixture(scope="session")
def jit_reset():
    """``jit(env.reset)`` with the config static: ``jit_reset(key, params, cfg)``."""
    return reset_jit


@pytest.fixture(scope="session")
def jit_step():
    """``jit(env.step)`` with the config static: ``jit_step(key, state, actions, params, cfg)``."""
    return step_jit


@pytest.fixture(scope="module")
def params():
    """The parameters of tests/_train_setup.py's tiny training set-up (a module that needs other
    parameters defines its own ``params`` fixture)."""
    from _train_setup import make_params

    return make_params()


@pytest.fixture(scope="module")
def dataset(params):
    """tests/_train_setup.py's 6000 transitions of full_reuse with epsilon 0.3."""
    from _train_setup import make_dataset

    return make_dataset(params)


@pytest.fixture(scope="module")
def trainer(params):
    """The checkpoint tests' trainer (tests/_train_setup.py's ``CKPT_TC``)."""
    from _train_setup import CFG, CKPT_TC, LC

    from jaxrrm import train

    return train.make_train(CFG, params, LC, CKPT_TC)


@pytest.fixture(scope="module")
def reference(trainer, dataset):
    """An uninterrupted 4-chunk run of ``trainer`` from ``key(5)`` without checkpoints."""
    return trainer.train(jax.random.key(5), dataset)


@pytest.fixture(scope="module")
def killed_dir(trainer, dataset, tmp_path_factory):
    """A checkpoint directory of ``trainer``'s run of ``key(5)`` killed after 1 chunk (step
    10)."""
    from _train_setup import kill_at

    from jaxrrm import checkpoint as ckpt

    d = tmp_path_factory.mktemp("killed")
    with pytest.raises(KeyboardInterrupt):
        trainer.train(jax.random.key(5), dataset, callback=kill_at(0), checkpoint_dir=d)
    assert ckpt.latest_step(d) == 10
    return d
