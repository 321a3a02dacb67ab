"""The command line of the experiment entry points: argument types, the ``--env`` and
compile-cache flags, user errors (:class:`CliError`), the run wrapper :func:`cli_main` (one error
line, exit 2; Ctrl-C, exit 130) and progress bars.

Output directories and files are :mod:`experiments.outputs`, text tables
:mod:`experiments.tables`, figures :mod:`experiments.plots`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Iterable, Optional


class CliError(Exception):
    """A user error with a message worth printing as is (no traceback)."""


def int_at_least(text: str, low: int, expected: str) -> int:
    """``text`` as an integer ``>= low``, else ``argparse.ArgumentTypeError("expected
    <expected>, got <text or value>")`` (for argparse types)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer ``>= 1``."""
    return int_at_least(text, 1, "a positive integer")


def seed_int(text: str) -> int:
    """An argparse type: a PRNG seed as :func:`jaxrrm.config.check_seed` accepts it (the
    message names :data:`jaxrrm.config.SEED_RANGE`)."""
    from jaxrrm.config import SEED_RANGE, check_seed

    try:
        return check_seed(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {SEED_RANGE}, got {text!r}") from None


def number_in(low: float, high: float = float("inf"), low_open: bool = False):
    """An argparse type: a finite float in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    import math

    lo = "(" if low_open else "["
    hi = "]" if math.isfinite(high) else ")"
    rng = f"{lo}{low:g}, {high:g}{hi}"

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in {rng}, got {text!r}") \
                from None
        ok = math.isfinite(v) and (v > low if low_open else v >= low) and v <= high
        if not ok:
            raise argparse.ArgumentTypeError(f"expected a number in {rng}, got {text!r}")
        return v

    parse.__name__ = f"number in {rng}"
    return parse


def widths(text: str) -> tuple:
    """An argparse type: layer widths ``W,W,...`` (1 to 16 integers in ``[1, 65536]``)."""
    try:
        ws = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected widths like 64,64, got {text!r}") from None
    if not ws or min(ws) < 1:
        raise argparse.ArgumentTypeError(f"expected positive widths like 64,64, got {text!r}")
    if max(ws) > 65536 or len(ws) > 16:
        raise argparse.ArgumentTypeError(f"expected at most 16 widths of at most 65536, got "
                                         f"{text!r}")
    return ws


def positive_float(text: str) -> float:
    """An argparse type: a finite float > 0 (:func:`number_in` ``(0, inf)``)."""
    return number_in(0.0, low_open=True)(text)


def unique(values, flag: str) -> list:
    """``values`` if no value repeats, else CliError naming the flag."""
    values = list(values)
    if len(set(values)) != len(values):
        raise CliError(f"{flag}: every value must appear once, got {values}")
    return values


def parse_env_overrides(items):
    """Split ``FIELD=VALUE`` strings into EnvConfig and EnvParams keyword arguments."""
    from jaxrrm import EnvConfig, EnvParams

    cfg_fields = {f.name: f for f in dataclasses.fields(EnvConfig)}
    par_fields = {f.name for f in dataclasses.fields(EnvParams)}
    cfg_kw, par_kw = {}, {}
    for item in items:
        if "=" not in item:
            raise CliError(f"--env expects FIELD=VALUE, got {item!r}")
        key, text = item.split("=", 1)
        if key in cfg_kw or key in par_kw:
            raise CliError(f"--env {key} is given twice: give each field once")
        if key in cfg_fields:
            default = cfg_fields[key].default
            if isinstance(default, bool):
                if text.lower() not in ("true", "false", "1", "0"):
                    raise CliError(f"--env {key} expects true or false, got {text!r}")
                cfg_kw[key] = text.lower() in ("true", "1")
            elif isinstance(default, int):
                try:
                    cfg_kw[key] = int(text)
                except ValueError:
                    raise CliError(f"--env {key} expects an integer, got {text!r}") from None
            elif key == "ap_positions_m":
                raise CliError("ap_positions_m cannot be set from the command line")
            else:
                cfg_kw[key] = text
        elif key in par_fields:
            try:
                par_kw[key] = float(text)
            except ValueError:
                raise CliError(f"--env {key} expects a number, got {text!r}") from None
        else:
            raise CliError(f"--env: unknown field {key!r}; EnvConfig fields: "
                           f"{sorted(cfg_fields)}; EnvParams fields: {sorted(par_fields)}")
    return cfg_kw, par_kw


def add_env_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", action="append", default=[], metavar="FIELD=VALUE",
                        help="override an EnvConfig or EnvParams field, e.g. --env num_aps=3 "
                             "--env pf_lambda=0.6 (repeatable)")


def make_env(items, **cfg_defaults):
    """``(EnvConfig, EnvParams)`` from ``--env`` overrides (CliError on an invalid value)."""
    from jaxrrm import EnvConfig, EnvParams

    cfg_kw, par_kw = parse_env_overrides(items)
    for k, v in cfg_defaults.items():
        cfg_kw.setdefault(k, v)
    try:
        cfg = EnvConfig(**cfg_kw)
        return cfg, EnvParams.create(cfg, **par_kw)
    except ValueError as e:
        raise CliError(f"invalid environment setting: {e}") from None


def add_compile_cache_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-compile-cache", action="store_true",
                        help="do not use JAX's persistent compilation cache (default: on, in "
                             "$JAXRRM_COMPILE_CACHE or ~/.cache/jaxrrm/jax; a second run then "
                             "skips most compilation)")


def compile_cache_dir() -> Path:
    """Where the CLIs keep JAX's persistent compilation cache: ``$JAXRRM_COMPILE_CACHE``, else
    ``$XDG_CACHE_HOME/jaxrrm/jax`` (``~/.cache/jaxrrm/jax``)."""
    if os.environ.get("JAXRRM_COMPILE_CACHE"):
        return Path(os.environ["JAXRRM_COMPILE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jaxrrm" / "jax"


def enable_compile_cache(directory: Optional[Path] = None) -> Optional[Path]:
    """Turn on JAX's persistent compilation cache in ``directory`` (default
    :func:`compile_cache_dir`) for programs that took at least one second to compile. Returns
    the directory, or None when it cannot be made (the run then compiles as usual).
    ``JAXRRM_NO_COMPILE_CACHE=1`` turns it off as ``--no-compile-cache`` does."""
    import jax

    if os.environ.get("JAXRRM_NO_COMPILE_CACHE", "") not in ("", "0"):
        return None
    d = Path(directory) if directory is not None else compile_cache_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(d))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    return d


def cli_main(build_parser, run, argv=None, interrupted: str = "interrupted") -> int:
    """Parse ``argv`` and ``run(args)``: user errors (a flag argparse refuses, or a
    :class:`CliError`) print one line and return 2 (no traceback);
    Ctrl-C exits 130 with ``interrupted`` (outputs are written atomically, so nothing is half
    written). While the run cleans up after the first Ctrl-C (temporary directories removed),
    further Ctrl-Cs are ignored, so the cleanup is not cut short. A parser with
    ``--no-compile-cache`` (:func:`add_compile_cache_argument`) gets JAX's persistent
    compilation cache unless the flag is given (:func:`enable_compile_cache`)."""
    import _thread
    import signal
    import threading

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:   # argparse printed its one-line error (2) or --help (0)
        return e.code if isinstance(e.code, int) else 2
    if not getattr(args, "no_compile_cache", True):
        enable_compile_cache()
    previous = None

    caught = []   # the signals received

    def on_sigint(signum, frame):
        caught.append(signum)
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # one interrupt: the cleanup runs whole
        raise KeyboardInterrupt

    previous_hook = sys.unraisablehook

    def unraisable(info):
        # A signal handler's exception raised while Python runs a finalizer (e.g. JAX's gc
        # callback) is printed and dropped, and the run would go on to write its outputs:
        # deliver the interrupt again, from a helper thread a moment later, when the main
        # thread has left the finalizer (if it lands in one again, this repeats).
        if caught and isinstance(info.exc_value, KeyboardInterrupt):
            signal.signal(signal.SIGINT, on_sigint)
            threading.Timer(0.05, _thread.interrupt_main, (signal.SIGINT,)).start()
            return
        previous_hook(info)

    try:
        previous = signal.signal(signal.SIGINT, on_sigint)
        sys.unraisablehook = unraisable
    except ValueError:   # not the main thread: keep Python's default handler
        previous = None
    try:
        run(args)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
            sys.unraisablehook = previous_hook
    return 0


def exit_process(code: int) -> None:
    """End a CLI process with ``code``. After Ctrl-C (130) the process ends at once with
    ``os._exit`` once the output streams are flushed: the run has already removed what it had
    half written, and skipping interpreter finalization never tears down JAX / XLA objects
    while XLA's worker threads may still run an interrupted computation (docs/design.md §5)."""
    if code == 130:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # pragma: no cover - a closed stream
                pass
        os._exit(130)
    sys.exit(code)


def progress(iterable: Iterable, desc: str, total: Optional[int] = None, enabled: bool = True):
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, disable=not enabled, dynamic_ncols=True)
