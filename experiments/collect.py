"""Collect an offline dataset from a behaviour policy and write it to disk.

    python -m experiments.collect --behaviour full_reuse --size 320000 --seed 0 --out datasets/fr
    python -m experiments.collect --behaviour random_walk --size 20000 --out datasets/rw

The dataset directory holds one ``.npy`` per field and ``meta.json`` (schema version, jaxrrm
version, environment, behaviour and its config, seeds, SHA-256 of every array); it is written
atomically and an existing one is never replaced without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _behaviours():
    from jaxrrm import data

    names = list(data.BEHAVIOURS)
    try:
        from jaxrrm.algos import ONLINE_LEARNERS  # sac, dqn (when present)
        names += [n for n in ONLINE_LEARNERS if n not in names]
    except ImportError:
        pass
    return names


def build_parser() -> argparse.ArgumentParser:
    from experiments.common import add_env_argument, positive_int

    names = _behaviours()
    p = argparse.ArgumentParser(
        prog="python -m experiments.collect",
        description="Collect an offline dataset of joint transitions from a behaviour policy.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--behaviour", required=True, metavar="NAME",
                   help=f"behaviour policy, one of: {', '.join(names)}")
    p.add_argument("--size", type=positive_int, required=True,
                   help="number of transitions (time steps of the game)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed of the collection")
    p.add_argument("--epsilon", type=float, default=0.0,
                   help="per-AP probability of a uniformly random valid action (exploration)")
    p.add_argument("--out", type=Path, required=True, help="dataset directory to create")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    add_env_argument(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(args) -> Path:
    from experiments import common
    from jaxrrm import data

    names = _behaviours()
    if args.behaviour not in names:
        raise common.CliError(f"unknown behaviour {args.behaviour!r}: allowed are "
                              f"{', '.join(names)}")
    if not 0.0 <= args.epsilon <= 1.0:
        raise common.CliError(f"--epsilon={args.epsilon} is invalid: allowed range is [0, 1]")
    if args.out.exists() and not args.overwrite:
        raise common.CliError(f"dataset {args.out} already exists: choose another --out or pass "
                              "--overwrite")
    cfg, params = common.make_env(args.env)
    if args.behaviour not in data.BEHAVIOURS:
        return _collect_online(args, cfg, params)

    bar = common.progress(None, f"collecting {args.behaviour}", total=args.size,
                          enabled=not args.no_progress)
    t0 = time.perf_counter()
    done = [0]

    def progress(n):
        bar.update(n - done[0])
        done[0] = n

    try:
        dataset, meta = data.collect(args.seed, args.behaviour, params, cfg, args.size,
                                     args.epsilon, progress=progress)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    meta["collect_seconds"] = seconds
    try:
        data.save(args.out, dataset, meta, overwrite=args.overwrite)
    except data.DatasetExistsError as e:
        raise common.CliError(str(e)) from None
    mean_r = float(dataset.reward.mean())
    print(f"{args.size} transitions of {args.behaviour} (epsilon {args.epsilon}) in {seconds:.1f} s,"
          f" mean reward {mean_r:.3f}; written to {args.out}")
    return args.out


def _collect_online(args, cfg, params) -> Path:
    raise NotImplementedError  # replaced below when the online learners land


def main(argv=None) -> int:
    from experiments.common import CliError

    args = build_parser().parse_args(argv)
    try:
        run(args)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no dataset was written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
