"""What every benchmark shares: where results go, the load average and peak memory it records,
and the atomic JSON write."""

from __future__ import annotations

import os
import sys
import resource
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).parent / "results"


def load_avg() -> float | None:
    """The 1-minute load average (None where the platform has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far [MiB] (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def check_out(out: Path | None, marker: str | None = None) -> None:
    """Refuse, before any measuring, an ``--out`` that would overwrite a file the project did
    not write (an existing file, unless its text starts with ``marker``: a report regenerating
    itself) or that cannot be written (a directory there, a parent that is a file or not
    writable). Exits with one ``error:`` line (status 2), as the experiment CLIs do."""
    if out is None:
        return
    out = Path(out)
    problem = None
    if out.is_dir():
        problem = "is a directory"
    elif out.exists():
        try:
            head = out.read_text(encoding="utf-8", errors="replace")[:200]
        except OSError:
            head = ""
        if marker is None or not head.startswith(marker):
            problem = "exists and was not written by this benchmark: choose another --out"
    if problem is None:
        probe = out.parent
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            problem = f"cannot be written ({probe} is not a directory)"
        elif not os.access(probe, os.W_OK):
            problem = f"cannot be written ({probe} is not writable)"
    if problem is not None:
        print(f"error: --out {out} {problem}", file=sys.stderr)
        raise SystemExit(2)


def write_json(result: dict, out: Path | None, name: str) -> Path:
    """Write ``result`` atomically to ``out`` (default ``results/<name>-<timestamp>.json``)."""
    if out is None:
        out = RESULTS_DIR / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    from jaxrrm import files

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return files.write_json(out, result)


def time_calls(fn, min_seconds: float, warmup: bool = False, min_calls: int = 1):
    """Mean wall and CPU seconds per call of ``fn()`` (which must block until its result is
    ready), over as many calls as fit in ``min_seconds`` and at least ``min_calls``, after one
    untimed warm-up call if ``warmup``. CPU time is the process's, all threads.

    Returns:
      (wall seconds per call, CPU seconds per call, number of calls).
    """
    if warmup:
        fn()
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while True:
        fn()
        n += 1
        wall = time.perf_counter() - t0
        if wall >= min_seconds and n >= min_calls:
            return wall / n, (time.process_time() - c0) / n, n
