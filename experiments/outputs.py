"""Where a run's results go: output directories written atomically and never replacing what the
project did not write (:class:`OutputDir`, :func:`check_output_path`), where a result came from
(:func:`machine_info`), and the files every learning run writes (:func:`write_outputs`).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Optional

from experiments.cli import CliError

#: Version of the layout of the files a run writes (config.json, summary.json, the marker).
SCHEMA_VERSION = 1


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


def write_outputs(out: "OutputDir", run, results: Dict[str, object], summary: dict,
                  extra_summary: Optional[dict] = None, plots: bool = True,
                  title: Optional[str] = None, extra_config: Optional[dict] = None) -> None:
    """config.json, summary.json/.csv, per_seed.json, marl_eval.json
    (:func:`jaxrrm.integrations.marl_eval.to_marl_eval`) and (with ``plots``) the rate CDF, the
    sum-vs-tail scatter and the learning curves of ``results`` (``{method:
    jaxrrm.compare.MethodResult}``) and ``summary`` (:func:`jaxrrm.compare.summarize`) of
    ``run`` (:class:`experiments.runner.Run`). ``extra_config`` is added to config.json (e.g. a
    study's swept values)."""
    from experiments import plots as figures
    from experiments import tables
    from jaxrrm.integrations import marl_eval

    info = machine_info()
    out.write_json("config.json", {"schema_version": SCHEMA_VERSION,
                                   "experiment": run.name, "argv": sys.argv[1:],
                                   **run.to_json(), **(extra_config or {}), "machine": info})
    out.write_json("summary.json", {
        "schema_version": SCHEMA_VERSION, "experiment": run.name, "seeds": run.seeds,
        "episodes_per_seed": run.episodes, "score_mu": float(run.params.score_mu),
        "methods": summary,
        "train_seconds": {n: r.train_seconds for n, r in results.items()},
        "eval_seconds": {n: r.eval_seconds for n, r in results.items()},
        **(extra_summary or {}), "machine": info})
    out.write_json("per_seed.json", {n: {k: v.tolist() for k, v in r.per_seed.items()}
                                     for n, r in results.items()})
    curves = {n: {"updates": r.history["eval_updates"].tolist(),
                  **{k: v.tolist() for k, v in r.history["eval"].items()},
                  "loss_updates": r.history["updates"].tolist(),
                  "losses": {k: v.tolist() for k, v in r.history["metrics"].items()}}
              for n, r in results.items() if r.history is not None}
    if curves:
        out.write_json("learning_curves.json", curves)
    out.write_json("marl_eval.json", marl_eval.to_marl_eval(
        results, marl_eval.task_name(run.cfg, run.params)))
    tables.write_summary_csv(out.file("summary.csv"), summary)
    if plots:
        cfg = run.cfg
        title = title or (f"{cfg.num_aps} APs, {cfg.num_ues} UEs, {run.seeds} seeds x "
                          f"{run.episodes} episodes")
        figures.plot_rate_cdf(out.file("rate_cdf.png"), {n: r.ue_rates
                                                          for n, r in results.items()}, title)
        figures.plot_sum_vs_tail(out.file("sum_vs_tail.png"), summary, title)
        if curves:
            figures.plot_learning_curves(out.file("learning_curves.png"), curves, title)
