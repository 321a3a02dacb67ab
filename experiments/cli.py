"""Shared helpers of the experiment entry points: CLI pieces, output directories, tables, plots.

No physics or learning here: only argument parsing, files, progress and figures.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterable, Optional

import numpy as np

SCHEMA_VERSION = 1


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
    """An argparse type: a PRNG seed, an integer in ``[0, MAX_SEED]``
    (:data:`jaxrrm.config.MAX_SEED`; larger ones would wrap around in ``jax.random.key``)."""
    from jaxrrm.config import MAX_SEED

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, {MAX_SEED}], got "
                                         f"{text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, {MAX_SEED}], got {value}")
    return value


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
    :func:`compile_cache_dir`) for programs that took at least one second to compile (the
    learners' chunks take 20-60 s on a laptop CPU). Returns the directory, or None when it
    cannot be made (the run then compiles as usual). ``JAXRRM_NO_COMPILE_CACHE=1`` turns it
    off as ``--no-compile-cache`` does."""
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
    half written, and skipping interpreter finalization avoids tearing down JAX / XLA objects
    while XLA's worker threads may still run an interrupted computation (which ended in a
    ``free(): corrupted unsorted chunks`` abort instead of exit 130)."""
    if code == 130:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # pragma: no cover - a closed stream
                pass
        os._exit(130)
    sys.exit(code)


def machine_info() -> dict:
    """Where a result came from: host, CPU, JAX backend and devices, versions, git commit."""
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=False, cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "commit": commit or "unknown",
        # Other work on the machine skews timings: the 1-minute load average when recorded.
        "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def default_out_dir(experiment: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("results") / experiment / stamp


#: The marker file every output directory of the project carries (see :class:`OutputDir`):
#: ``--overwrite`` replaces only a directory that has it.
RESULTS_MARKER = ".jaxrrm-results.json"


def is_results_dir(path: Path) -> bool:
    """Whether ``path`` is an output directory this project wrote: a directory (not a link)
    whose :data:`RESULTS_MARKER` is a JSON object with ``"writer": "jaxrrm"`` and an integer
    ``schema_version`` (an empty or planted file of that name does not count)."""
    marker = Path(path) / RESULTS_MARKER
    if Path(path).is_symlink() or not Path(path).is_dir() or not marker.is_file():
        return False
    try:
        obj = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return (isinstance(obj, dict) and obj.get("writer") == "jaxrrm"
            and isinstance(obj.get("schema_version"), int))


#: Room left in a file name for the hidden siblings an atomic write makes
#: (``.<name>.tmp-<random>``, ``.<name>.old-<pid>-<random>``).
_SIBLING_ROOM = 40


def check_output_path(path: Path, overwrite: bool, flag: str = "--out",
                      is_ours=is_results_dir, what: str = "a jaxrrm results directory") -> None:
    """Refuse (CliError, one line naming ``flag``) an output path that cannot be written or must
    not be replaced, before any work starts: the current directory or one of its parents; a
    name too long for the hidden siblings of an atomic write; an existing path without
    ``overwrite``; with ``overwrite``, anything but a directory ``is_ours`` recognizes (written
    by this project: :func:`is_results_dir`, or :func:`jaxrrm.data.is_dataset_dir` for datasets)
    or an empty directory; a parent that is not a directory or cannot be written."""
    path = Path(path)
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents or not path.name:
        raise CliError(f"{flag} {str(path) or repr('')}: the current directory or one of its "
                       "parents cannot be an output (it is replaced as a whole); name a "
                       "directory below it")
    try:
        name_max = os.pathconf(resolved.parent if resolved.parent.exists() else "/", "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if len(os.fsencode(path.name)) + _SIBLING_ROOM > name_max:
        raise CliError(f"{flag}: the name {path.name[:40]!r}... is too long (at most "
                       f"{name_max - _SIBLING_ROOM} bytes: the atomic write needs room for its "
                       "temporary sibling's name)")
    if os.path.lexists(path):
        if not overwrite:
            raise CliError(f"{flag} {path} already exists: choose another {flag} or pass "
                           "--overwrite")
        if path.is_symlink() or not path.is_dir():
            raise CliError(f"{flag} {path} exists and is not a directory: refusing to replace "
                           "it")
        if any(path.iterdir()) and not is_ours(path):
            raise CliError(f"{flag} {path} is not {what}: refusing to replace it with "
                           f"--overwrite; remove it yourself or choose another {flag}")
    check_writable_dir(path.parent, flag, path)


def check_writable_dir(directory: Path, flag: str, path: Optional[Path] = None) -> None:
    """Make ``directory`` (and its parents) if needed and write and remove a temporary file
    there: CliError naming ``flag`` and ``path`` (default ``directory``) when that fails (a
    file in the way, no permission, a read-only file system), so a run finds out before its
    work, not when it writes."""
    directory, path = Path(directory), Path(path if path is not None else directory)
    probe = directory
    while not os.path.lexists(probe):
        probe = probe.parent
    if not probe.is_dir():
        raise CliError(f"{flag} {path}: {probe} is not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        raise CliError(f"{flag} {path}: cannot write in {directory} ({e.strerror or e})") \
            from None


class OutputDir:
    """An output directory written atomically: files go to a hidden temporary sibling, which is
    renamed to the final path by :meth:`commit`. The path is checked when the object is made,
    before any work (:func:`check_output_path`): an existing path is refused, and with
    ``overwrite`` only a directory that carries :data:`RESULTS_MARKER` (every directory this
    class writes has one) or an empty one is replaced, atomically
    (:func:`jaxrrm.files.replace_dir`)."""

    def __init__(self, path: Path, overwrite: bool = False, flag: str = "--out"):
        import jax

        # In a multi-process run (jaxrrm.distributed) only process 0 writes shared outputs; the
        # others write into a temporary directory that commit() discards.
        self.writer = jax.process_index() == 0
        self.path = Path(path)
        self.flag = flag
        self.overwrite = overwrite
        check_output_path(self.path, overwrite, flag)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.tmp-",
                                             dir=self.path.parent))
        except OSError as e:
            raise CliError(f"{flag} {self.path}: cannot write there ({e.strerror})") from None
        self.write_json(RESULTS_MARKER, {"schema_version": SCHEMA_VERSION, "writer": "jaxrrm",
                                         "created_utc": _dt.datetime.now(
                                             _dt.timezone.utc).isoformat(timespec="seconds")})

    def file(self, name: str) -> Path:
        return self.tmp / name

    def write_json(self, name: str, obj) -> None:
        """Strict JSON (:func:`jaxrrm.files.to_json`: NaN / inf as null)."""
        from jaxrrm import files

        files.write_json(self.tmp / name, obj)

    def commit(self) -> Path:
        if not self.writer:
            self.abort()
            return self.path
        from jaxrrm import files

        check_output_path(self.path, self.overwrite, self.flag)  # nothing changed meanwhile
        files.replace_dir(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def fmt_ci(stat: dict, digits: int = 2) -> str:
    return f"{stat['mean']:.{digits}f} ± {stat['ci95']:.{digits}f}"


def format_table(summary: Dict[str, dict], extra: Optional[Dict[str, str]] = None) -> str:
    """A fixed-width text table: one row per method, mean ± 95% CI per metric."""
    cols = [("sum_rate", "sum rate [Mbit/s]", 2), ("p5_rate", "5%-rate [Mbit/s]", 3),
            ("score", "score [Mbit/s]", 2), ("relative_score", "rel. score (TDM=1)", 3)]
    header = ["method"] + [c[1] for c in cols] + (list(next(iter(extra.values())).keys())
                                                  if extra else [])
    rows = []
    for name, stats in summary.items():
        row = [name] + [fmt_ci(stats[key], d) if key in stats else "-" for key, _, d in cols]
        if extra:
            row += list(extra.get(name, {}).values())
        rows.append(row)
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def write_summary_csv(path: Path, summary: Dict[str, dict]) -> None:
    metrics = ["sum_rate", "p5_rate", "score", "relative_score"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method"] + [f"{m}_{k}" for m in metrics for k in ("mean", "ci95")])
        for name, stats in summary.items():
            w.writerow([name] + [stats.get(m, {}).get(k, "") for m in metrics
                                 for k in ("mean", "ci95")])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, ax, path: Path, title: str, legend_loc: str = "best") -> None:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc=legend_loc)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)


def plot_rate_cdf(path: Path, ue_rates: Dict[str, np.ndarray], title: str = "") -> None:
    """Empirical CDF of per-UE average rates (pooled over seeds and episodes), one line a method."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, r in ue_rates.items():
        x = np.sort(np.asarray(r).reshape(-1))
        ax.plot(x, np.arange(1, x.size + 1) / x.size, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("per-UE average rate [Mbit/s]")
    ax.set_ylabel("CDF")
    ax.axhline(0.05, color="grey", lw=0.6, ls=":")
    _finish(fig, ax, path, title)


def plot_sum_vs_tail(path: Path, summary: Dict[str, dict], title: str = "") -> None:
    """Sum rate against 5th-percentile rate, mean ± 95% CI over seeds, one point a method."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.4))
    for name, s in summary.items():
        ax.errorbar(s["p5_rate"]["mean"], s["sum_rate"]["mean"], xerr=_ci(s["p5_rate"]),
                    yerr=_ci(s["sum_rate"]), fmt="o", capsize=3, label=name)
    ax.set_xlabel("5th-percentile rate [Mbit/s]")
    ax.set_ylabel("sum rate [Mbit/s]")
    _finish(fig, ax, path, title)


def plot_learning_curves(path: Path, curves: Dict[str, dict], title: str = "") -> None:
    """Held-out score of the greedy policy against gradient updates, mean ± 95% CI over seeds,
    one line a learner (``curves[name] = {"updates": [V], "score": [V][S]}``)."""
    from jaxrrm.metrics import mean_ci95

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, c in curves.items():
        x = np.asarray(c["updates"])
        stats = [mean_ci95(np.asarray(row, np.float64)) for row in c["score"]]
        m = np.array([s[0] for s in stats])
        ci = np.nan_to_num(np.array([s[1] for s in stats]))
        ax.plot(x, m, marker="o", ms=3, label=name)
        ax.fill_between(x, m - ci, m + ci, alpha=0.2)
    ax.set_xlabel("gradient updates")
    ax.set_ylabel("score [Mbit/s] (validation episodes)")
    _finish(fig, ax, path, title)


def _ci(stat: dict) -> float:
    v = stat["ci95"]
    return 0.0 if not np.isfinite(v) else v


def progress(iterable: Iterable, desc: str, total: Optional[int] = None, enabled: bool = True):
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, disable=not enabled, dynamic_ncols=True)


# --------------------------------------------------------------------------------------------
# Studies: sweep values and sweep plots
# --------------------------------------------------------------------------------------------

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


def positive_float(text: str) -> float:
    """An argparse type: a finite float > 0 (:func:`number_in` ``(0, inf)``)."""
    return number_in(0.0, low_open=True)(text)


def unique(values, flag: str) -> list:
    """``values`` if no value repeats, else CliError naming the flag."""
    values = list(values)
    if len(set(values)) != len(values):
        raise CliError(f"{flag}: every value must appear once, got {values}")
    return values


def _x_positions(values, categorical: bool):
    if categorical:
        return np.arange(len(values), dtype=float)
    return np.asarray(values, dtype=float)


def plot_sweep(path: Path, rows, xlabel: str, metric: str = "score",
               references: Optional[Dict[str, dict]] = None, xscale: str = "linear",
               categorical: bool = False, title: str = "", kinds=("learner", "behaviour",
                                                                 "baseline")) -> None:
    """A study's headline figure: ``metric`` (mean ± 95% CI over seeds) against the swept value,
    one line per method (``rows``: the sweep rows of :func:`experiments.runner.run_variants`);
    ``references`` (``{name: summary entry}``) are drawn as horizontal lines with their CI band
    (methods that do not depend on the swept value, e.g. the baselines of a shared
    environment). ``categorical`` places the values at equal spacing with their names."""
    plt = _pyplot()
    values = list(dict.fromkeys(r["value"] for r in rows))
    xs = dict(zip(values, _x_positions(values, categorical)))
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    methods = list(dict.fromkeys(r["method"] for r in rows if r["kind"] in kinds))
    for i, method in enumerate(methods):
        rs = [r for r in rows if r["method"] == method and metric in r]
        # categorical values: side by side around each position, not joined
        shift = 0.06 * (i - (len(methods) - 1) / 2) if categorical else 0.0
        x = np.array([xs[r["value"]] for r in rs]) + shift
        y = np.array([r[metric]["mean"] for r in rs])
        ci = np.array([_ci(r[metric]) for r in rs])
        kind = rs[0]["kind"] if rs else "learner"
        ls = "none" if categorical else ("-" if kind != "baseline" else "--")
        ax.errorbar(x, y, yerr=ci, marker="o" if kind != "baseline" else "s", ms=4,
                    capsize=3, ls=ls, color=f"C{i % 10}", label=method)
    for j, (name, s) in enumerate((references or {}).items()):
        if metric not in s:
            continue
        m, c = s[metric]["mean"], _ci(s[metric])
        color = f"C{(9 - j) % 10}"   # from the other end of the cycle than the methods
        ax.axhline(m, ls=":", lw=1.2, color=color, label=f"{name}")
        ax.axhspan(m - c, m + c, color=color, alpha=0.1)
    if categorical:
        ax.set_xticks(list(xs.values()))
        ax.set_xticklabels([str(v) for v in values])
        ax.set_xlim(-0.5, len(values) - 0.5)
    else:
        if xscale == "symlog":
            positive = [v for v in values if v > 0]
            ax.set_xscale("symlog", linthresh=min(positive) if positive else 1.0)
        else:
            ax.set_xscale(xscale)
        ax.set_xticks(list(xs.values()))
        ax.set_xticklabels([f"{v:g}" for v in values])
        ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel({"score": "score [Mbit/s]", "relative_score": "score relative to TDM",
                   "sum_rate": "sum rate [Mbit/s]", "p5_rate": "5th-percentile rate [Mbit/s]",
                   "return": "episode return"}.get(metric, metric))
    _finish(fig, ax, path, title)


def plot_frontier(path: Path, rows, references: Optional[Dict[str, dict]] = None,
                  value_fmt: str = "λ={:g}", title: str = "") -> None:
    """Sum rate against 5th-percentile rate (mean ± 95% CI), one connected line per method
    through its points of the sweep, each point annotated with its value; ``references`` as
    single points (methods that do not depend on the swept value)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method]
        x = [r["p5_rate"]["mean"] for r in rs]
        y = [r["sum_rate"]["mean"] for r in rs]
        base = rs[0]["kind"] == "baseline"
        ax.errorbar(x, y, xerr=[_ci(r["p5_rate"]) for r in rs],
                    yerr=[_ci(r["sum_rate"]) for r in rs], marker="s" if base else "o", ms=4,
                    capsize=2, ls="--" if base else "-", label=method)
        for r, xi, yi in zip(rs, x, y):
            ax.annotate(value_fmt.format(r["value"]), (xi, yi), textcoords="offset points",
                        xytext=(4, -10) if base else (4, 4), fontsize=7)
    for name, s in (references or {}).items():
        ax.errorbar(s["p5_rate"]["mean"], s["sum_rate"]["mean"], xerr=_ci(s["p5_rate"]),
                    yerr=_ci(s["sum_rate"]), fmt="D", ms=5, capsize=2, label=name)
    ax.set_xlabel("5th-percentile rate [Mbit/s]")
    ax.set_ylabel("sum rate [Mbit/s]")
    _finish(fig, ax, path, title, legend_loc="lower right")  # the frontier runs top left


def plot_side_by_side(path: Path, entries: Dict[str, Dict[str, dict]], panels: Dict[str, str],
                      title: str = "") -> None:
    """Horizontal bars (mean ± 95% CI), one panel per quantity (``panels``: ``{key: axis
    label}``) and one bar per method (``entries[method][key] = {"mean", "ci95"}``), methods in
    the same order in every panel: e.g. returns beside scores."""
    plt = _pyplot()
    names = list(entries)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 1.6,
                                                      0.42 * len(names) + 1.4), sharey=True)
    axes = np.atleast_1d(axes)
    y = np.arange(len(names))
    for ax, (key, label) in zip(axes, panels.items()):
        m = [entries[n][key]["mean"] if key in entries[n] else np.nan for n in names]
        c = [_ci(entries[n][key]) if key in entries[n] else 0.0 for n in names]
        ax.barh(y, m, xerr=c, capsize=3, color=[f"C{i % 10}" for i in range(len(names))])
        ax.set_xlabel(label)
        ax.grid(alpha=0.3, axis="x")
        ax.axvline(0.0, color="black", lw=0.6)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels(names, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
