"""Test support shipped with the library, not part of the simulator's API.

:mod:`jaxrrm.testing.reference` is an independent NumPy (float64) model of the simulator: the
oracle that ``tests/test_reference.py`` cross-checks the JAX code against, and the slow peer of
``benchmarks/env_throughput.py``. It is importable so that users extending the physics can check
their own changes against it (as jumanji ships ``jumanji.testing``); nothing in :mod:`jaxrrm`
imports it.
"""
