"""Collect an offline dataset from a behaviour policy and write it to disk.

    python -m experiments.collect --behaviour sac --size 320000 --seed 0 --out datasets/sac
    python -m experiments.collect --behaviour full_reuse --size 320000 --out datasets/fr
    python -m experiments.collect --behaviour random_walk --size 20000 --out datasets/rw

Online learners (``sac``, ``dqn``) are first trained on the vectorized environment; the dataset is
then a slice of the stream of transitions that training produced (``--source stream``, by default
its last ``--size`` transitions; ``--stream-start`` picks an earlier part) or rollouts of the
finished policy (``--source policy``, with optional ``--epsilon``). Their learning curve (losses,
greedy-policy score) is stored in ``meta.json``.

The dataset directory holds one ``.npy`` per field and ``meta.json`` (schema version, jaxrrm
version, environment, behaviour and its config, seeds, SHA-256 of every array); it is written
atomically and an existing one is never replaced without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def _behaviours():
    """Baselines and random walk, then the online learners (:data:`jaxrrm.behaviour_data.BEHAVIOURS`)."""
    from jaxrrm.behaviour_data import BEHAVIOURS

    return list(BEHAVIOURS)


def build_parser() -> argparse.ArgumentParser:
    from experiments.cli import add_env_argument, number_in, positive_int, seed_int
    from jaxrrm.config import SEED_RANGE

    names = _behaviours()
    p = argparse.ArgumentParser(
        prog="python -m experiments.collect",
        description="Collect an offline dataset of joint transitions from a behaviour policy.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--behaviour", required=True, metavar="NAME",
                   help=f"behaviour policy, one of: {', '.join(names)}")
    p.add_argument("--size", type=positive_int, required=True,
                   help="number of transitions (time steps of the game)")
    p.add_argument("--seed", type=seed_int, default=0,
                   help=f"PRNG seed of the collection, {SEED_RANGE}")
    p.add_argument("--epsilon", type=number_in(0.0, 1.0), default=None,
                   help="per-AP probability of a uniformly random valid action (exploration; "
                        "default 0; online learners: only with --source policy)")
    p.add_argument("--out", type=Path, required=True, help="dataset directory to create")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    online = p.add_argument_group("online learners (sac, dqn)")
    online.add_argument("--train-steps", type=positive_int, default=None,
                        help="transitions of online training (default: max(--size, 128000) as "
                             "in the main job, so the same spec makes the same dataset; rounded "
                             "up to whole chunks)")
    online.add_argument("--source", choices=("stream", "policy"), default=None,
                        help="'stream': a slice of the transitions the training run produced; "
                             "'policy': rollouts of the finished policy (greedy, or with "
                             "--epsilon exploration); default: stream")
    online.add_argument("--stream-start", type=number_in(0.0, 1.0), default=None,
                        help="where in the training run the slice starts, as a fraction of it "
                             "(default: the last --size transitions)")
    online.add_argument("--eval-every", type=positive_int, default=None,
                        help="evaluate the greedy policy every this many chunks (learning "
                             "curve; default 10)")
    online.add_argument("--eval-episodes", type=positive_int, default=None,
                        help="episodes per evaluation seed (4 seeds; default 64)")
    add_env_argument(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    from experiments.cli import add_compile_cache_argument

    add_compile_cache_argument(p)
    return p


def run(args) -> Path:
    from experiments import cli, outputs
    from jaxrrm import data

    names = _behaviours()
    if args.behaviour not in names:
        raise cli.CliError(f"unknown behaviour {args.behaviour!r}: allowed are "
                              f"{', '.join(names)}")
    online_flags = {"--train-steps": args.train_steps, "--source": args.source,
                    "--stream-start": args.stream_start, "--eval-every": args.eval_every,
                    "--eval-episodes": args.eval_episodes}
    online = args.behaviour not in data.BEHAVIOURS
    if not online:
        given = [k for k, v in online_flags.items() if v is not None]
        if given:
            raise cli.CliError(f"{', '.join(given)}: only for the online learners "
                                  f"({', '.join(n for n in names if n not in data.BEHAVIOURS)}),"
                                  f" not for --behaviour {args.behaviour}")
    else:
        if args.source == "policy" and args.stream_start is not None:
            raise cli.CliError("--stream-start picks a slice of the training stream: not "
                                  "with --source policy")
        if args.source != "policy" and args.epsilon is not None:
            raise cli.CliError("--epsilon explores while rolling out the finished policy: "
                                  "only with --source policy (the stream is the training run's "
                                  "own transitions)")
    args.epsilon = 0.0 if args.epsilon is None else args.epsilon
    outputs.check_output_path(args.out, args.overwrite, is_ours=data.is_dataset_dir,
                              what="a dataset directory written by jaxrrm")
    cfg, params = cli.make_env(args.env)
    if online:
        return _collect_online(args, cfg, params)

    bar = cli.progress(None, f"collecting {args.behaviour}", total=args.size,
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
        raise cli.CliError(str(e)) from None
    mean_r = float(dataset.reward.mean())
    print(f"{args.size} transitions of {args.behaviour} (epsilon {args.epsilon}) in "
          f"{seconds:.1f} s, mean reward {mean_r:.3f}; written to {args.out}")
    return args.out


def _collect_online(args, cfg, params) -> Path:
    """Train an online learner (sac, dqn), then keep a slice of its transition stream or roll
    out the finished policy (:func:`jaxrrm.behaviour_data.build_dataset`)."""
    import numpy as np

    from experiments import cli
    from jaxrrm import data, behaviour_data

    try:
        spec = behaviour_data.DatasetSpec(
            behaviour=args.behaviour, size=args.size, seed=args.seed,
            train_steps=args.train_steps or 0,  # 0: behaviour_data's default, as the main job
            source=args.source or "stream", stream_start=args.stream_start, epsilon=args.epsilon)
    except ValueError as e:
        raise cli.CliError(str(e)) from None
    bar = cli.progress(None, f"training {args.behaviour}", total=None,
                          enabled=not args.no_progress)

    def progress(done, total, post):
        bar.total = total
        bar.n = done
        bar.set_postfix_str(post, refresh=False)
        bar.refresh()

    t0 = time.perf_counter()
    try:
        dataset, meta, _ = behaviour_data.build_dataset(spec, cfg, params, progress,
                                                  eval_every=args.eval_every or 10,
                                                  eval_episodes=args.eval_episodes or 64)
    except ValueError as e:
        raise cli.CliError(f"{e} (--size {args.size}: raise --train-steps or use --source "
                              "policy)") from None
    finally:
        bar.close()
    meta["collect_seconds"] = time.perf_counter() - t0
    try:
        data.save(args.out, dataset, meta, overwrite=args.overwrite)
    except data.DatasetExistsError as e:
        raise cli.CliError(str(e)) from None
    bcfg = meta["behaviour_config"]
    final = bcfg["learning_curve"][-1]
    print(f"{args.behaviour}: {bcfg['train_transitions']} training transitions in "
          f"{bcfg['train_seconds']:.1f} s; greedy policy score "
          f"{final.get('eval_score', float('nan')):.1f} Mbit/s (sum "
          f"{final.get('eval_sum_rate', float('nan')):.1f}, 5% "
          f"{final.get('eval_p5_rate', float('nan')):.2f}); kept {args.size} transitions "
          f"({bcfg['source']}, mean reward {float(np.mean(dataset.reward)):.3f}); written "
          f"to {args.out}")
    return args.out


def main(argv=None) -> int:
    from experiments.cli import cli_main

    return cli_main(build_parser, run, argv, interrupted="interrupted: no dataset was written")


if __name__ == "__main__":
    from experiments.cli import exit_process

    exit_process(main())
