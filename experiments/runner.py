"""The run of the main job and the studies: presets and the learning flags (:func:`resolve` turns
them into a :class:`Run`), the run's steps with progress bars and one-line user errors (the
behaviour dataset, the baselines, each learner: :mod:`jaxrrm.behaviour_data`, :mod:`jaxrrm.compare`),
and a study's sweep of variants (:class:`Variant`, :func:`run_study`).

No physics or learning here: the library decides what is trained and evaluated; this module
turns flags into its configurations and hands its results to :mod:`experiments.outputs` and
:mod:`experiments.tables`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

from experiments import cli, outputs, tables

#: Learner names of the command line -> the paper's names (also the keys of summary.json).
LEARNERS = {"ctde": "CTDE-MARL-CQL", "independent": "I-MARL-CQL",
            "centralized": "C-MARL-CQL", "bc": "BC", "qmix": "QMIX-MARL-CQL",
            "bc_central": "C-BC"}

#: The learners that use --cql-alpha, --backbone and --gamma.
CQL_LEARNERS = ("ctde", "independent", "centralized", "qmix")

#: The learners with a joint policy over the global state.
CENTRALIZED_LEARNERS = ("centralized", "bc_central")

#: The learners the main job trains by default (the paper's three paradigms and BC).
MAIN_LEARNERS = ("ctde", "independent", "centralized", "bc")


@dataclasses.dataclass(frozen=True)
class Preset:
    """Sizes of a run. ``behaviour_train_steps`` 0 = ``max(dataset_size, 128000)``."""

    episodes: int
    dataset_size: int
    behaviour_train_steps: int
    hidden: tuple
    updates: int
    batch_size: int
    chunk_size: int
    eval_every_chunks: int
    seeds: Optional[int] = None      # None: --seeds decides
    horizon: Optional[int] = None    # None: the environment's default


PRESETS = {
    # Sized for a 2-core laptop CPU (its wall time: benchmarks/ANALYSIS.md).
    "default": Preset(episodes=64, dataset_size=100_000, behaviour_train_steps=128_000,
                      hidden=(64, 64), updates=3_000, batch_size=256, chunk_size=500,
                      eval_every_chunks=2),
    # The paper-sized study, meant for a GPU.
    "paper": Preset(episodes=512, dataset_size=320_000, behaviour_train_steps=320_000,
                    hidden=(256, 256), updates=30_000, batch_size=256, chunk_size=1_000,
                    eval_every_chunks=5),
    # --quick: a smoke run of every stage at tiny sizes.
    "quick": Preset(episodes=8, dataset_size=6_400, behaviour_train_steps=6_400,
                    hidden=(32, 32), updates=100, batch_size=64, chunk_size=50,
                    eval_every_chunks=1, seeds=2, horizon=50),
}


#: Flags of :func:`add_run_arguments` a study may leave out (``omit=``), with the value
#: :func:`resolve` then uses: a study that sweeps the behaviour, the dataset size or the CQL
#: weight has its own flag for it.
OMITTABLE = {"behaviour": "sac", "dataset_size": None, "cql_alpha": None, "learners": None}

#: What the CQL flags mean when not given (None marks "not given": a flag given for learners
#: that do not use it is refused).
CQL_DEFAULTS = {"cql_alpha": 1.0, "backbone": "sac", "gamma": 0.9}

#: Largest CQL weight a flag accepts: far above any useful value, and the penalty stays finite
#: in float32.
MAX_CQL_ALPHA = 1e6


def add_run_arguments(p: argparse.ArgumentParser, learners: Sequence[str] = MAIN_LEARNERS,
                      behaviour: str = "sac", omit: Sequence[str] = (),
                      learner_choices: Optional[Sequence[str]] = None,
                      seeds: int = 16) -> None:
    """The flags every learning experiment shares (sizes default to the preset's).

    ``omit`` leaves out flags of :data:`OMITTABLE` (their defaults are set instead: the learners
    then default to ``learners``); ``learner_choices`` restricts ``--learners``; ``seeds`` is
    the default of ``--seeds``."""
    from experiments.cli import add_env_argument, number_in, positive_int, seed_int, widths
    from jaxrrm import behaviour_data
    from jaxrrm.config import SEED_RANGE

    unknown = set(omit) - set(OMITTABLE)
    if unknown:
        raise ValueError(f"omit: unknown flags {sorted(unknown)}; allowed {sorted(OMITTABLE)}")
    p.set_defaults(**{k: (list(learners) if k == "learners" else
                          behaviour if k == "behaviour" else v)
                      for k, v in OMITTABLE.items() if k in omit})
    p.set_defaults(default_seeds=seeds)
    p.add_argument("--seeds", type=positive_int, default=None,
                   help="independent seeds: each trains every learner once (vmapped) and "
                        f"evaluates every method on its own test episodes (default: {seeds}; "
                        f"--quick: {PRESETS['quick'].seeds})")
    p.add_argument("--preset", choices=("default", "paper"), default="default",
                   help="'default' finishes on a 2-core laptop CPU; 'paper' is the full-size "
                        "study meant for a GPU (sizes below override it)")
    q = PRESETS["quick"]
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run of every stage: {q.seeds} seeds, {q.episodes} test episodes "
                        f"of {q.horizon} slots, {q.dataset_size} transitions, {q.updates} updates "
                        "(sizes given as flags apply over it; not with --preset paper)")
    p.add_argument("--episodes", type=positive_int, default=None,
                   help="test episodes per seed (default: the preset's: "
                        f"{PRESETS['default'].episodes} / {PRESETS['paper'].episodes})")
    choices = list(learner_choices or LEARNERS)
    if "learners" not in omit:
        p.add_argument("--learners", nargs="+", choices=choices, default=list(learners),
                       help="offline learners to train: " + ", ".join(
                           f"{k} = {LEARNERS[k]}" for k in choices))
    g = p.add_argument_group("behaviour dataset (made once, then reused from --data-dir)")
    if "behaviour" not in omit:
        g.add_argument("--behaviour", choices=behaviour_data.BEHAVIOURS, default=behaviour,
                       help="behaviour policy of the dataset (sac/dqn are trained online first)")
    if "dataset_size" not in omit:
        g.add_argument("--dataset-size", type=positive_int, default=None,
                       help="transitions in the dataset (default: the preset's)")
    g.add_argument("--behaviour-train-steps", type=positive_int, default=None,
                   help="sac/dqn: transitions of the behaviour's online training (default: the "
                        "preset's); the dataset is the last --dataset-size of them")
    g.add_argument("--data-dir", type=Path, default=Path("datasets/cache"),
                   help="cache of behaviour datasets, keyed by their full configuration")
    g.add_argument("--rebuild-dataset", action="store_true",
                   help="make the dataset again even when the cache has it")
    g = p.add_argument_group("offline training")
    g.add_argument("--updates", type=positive_int, default=None,
                   help="gradient updates per seed (default: the preset's)")
    g.add_argument("--batch-size", type=positive_int, default=None,
                   help="minibatch size (default: the preset's)")
    g.add_argument("--hidden", type=widths, default=None, metavar="W,W",
                   help="hidden widths of critics and actors, e.g. 256,256 (default: the preset's)")
    if "cql_alpha" not in omit:
        g.add_argument("--cql-alpha", type=number_in(0.0, MAX_CQL_ALPHA), default=None,
                       help="weight of the CQL penalty (0 = plain offline SAC; default 1; only "
                            "for CQL learners)")
    g.add_argument("--backbone", choices=("sac", "dqn"), default=None,
                   help="backbone of the CQL learners: discrete SAC (twin critics, actor, "
                        "temperature; the default) or DQN (one Q network, double-DQN target, "
                        "greedy policy)")
    g.add_argument("--gamma", type=number_in(0.0, 0.999999), default=None,
                   help="discount of the CQL learners' TD target (default 0.9)")
    add_env_argument(p)
    from experiments import cli_distributed

    cli_distributed.add_arguments(p)
    p.add_argument("--seed", type=seed_int, default=0,
                   help=f"base PRNG seed of the run, {SEED_RANGE}")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default: results/<experiment>/<timestamp>); must not "
                        "exist")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out directory")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    cli.add_compile_cache_argument(p)


@dataclasses.dataclass
class Run:
    """A run's resolved settings (flags over preset)."""

    name: str
    preset: str
    seeds: int
    episodes: int
    cfg: object
    params: object
    spec: object
    hidden: tuple
    updates: int
    batch_size: int
    chunk_size: int
    eval_every_chunks: int
    cql_alpha: float
    seed: int
    progress: bool
    data_dir: Path
    rebuild: bool
    behaviour_train_steps: int = 0   # sac/dqn: transitions of the online training (0: size)
    backbone: str = "sac"            # backbone of the CQL learners
    gamma: float = 0.9               # discount of the CQL learners
    mesh: object = None   # jaxrrm.distributed mesh (None: one device, the default)

    def dataset_spec(self, behaviour: Optional[str] = None, size: Optional[int] = None):
        """This run's :class:`~jaxrrm.behaviour_data.DatasetSpec` with another behaviour and/or size
        (:func:`dataset_spec`)."""
        return dataset_spec(behaviour or self.spec.behaviour, size or self.spec.size,
                            self.spec.seed, self.behaviour_train_steps)

    def train_config(self, updates: Optional[int] = None):
        from jaxrrm import train

        updates = updates or self.updates
        chunk = min(self.chunk_size, updates)
        while updates % chunk:
            chunk -= 1
        return train.TrainConfig(num_updates=updates, batch_size=self.batch_size,
                                 chunk_size=chunk, num_seeds=self.seeds,
                                 eval_every_chunks=self.eval_every_chunks,
                                 eval_episodes=min(self.episodes, 32))

    def learner_config(self, name: str, **overrides):
        """The configuration of learner ``name`` (:data:`LEARNERS`) at this run's sizes.

        An ``execution`` override applies to the centralized learners (``centralized``,
        ``bc_central``) only; the others execute per AP anyway and ignore it."""
        from jaxrrm.algos import bc, cql
        from jaxrrm.algos.netconfig import NetConfig

        net = NetConfig(hidden=tuple(self.hidden), shared=False)
        if name not in CENTRALIZED_LEARNERS:
            overrides.pop("execution", None)
        try:
            if name in ("bc", "bc_central"):
                return bc.BCConfig(net=net, paradigm="centralized" if name == "bc_central"
                                   else "decentralized", **overrides)
            overrides.setdefault("cql_alpha", self.cql_alpha)
            overrides.setdefault("backbone", self.backbone)
            overrides.setdefault("gamma", self.gamma)
            return cql.CQLConfig(paradigm=name, critic_net=net, actor_net=net, **overrides)
        except ValueError as e:
            raise cli.CliError(f"invalid learner setting: {e}") from None

    def to_json(self) -> dict:
        from jaxrrm import data

        return {"preset": self.preset, "seeds": self.seeds, "episodes_per_seed": self.episodes,
                "seed": self.seed, "dataset": dataclasses.asdict(self.spec),
                "hidden": list(self.hidden), "updates": self.updates,
                "batch_size": self.batch_size, "chunk_size": self.chunk_size,
                "cql_alpha": self.cql_alpha, "backbone": self.backbone, "gamma": self.gamma,
                "env_config": data.config_to_json(self.cfg),
                "env_params": data.params_to_json(self.params)}


def fast_compile_for_quick(args) -> None:
    """With ``--quick``, lower the XLA CPU backend's optimisation level
    (``--xla_backend_optimization_level=0`` in ``XLA_FLAGS``, unless the flag is set already):
    faster compilation, slower execution, numerics still IEEE float32; for a smoke run, which
    compiles many programs and runs each briefly. Only effective before JAX's backend starts,
    i.e. when called first thing in a process (figures: benchmarks/ANALYSIS.md)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if args.quick and "xla_backend_optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " --xla_backend_optimization_level=0").strip()


def resolve(args, name: str, **env_defaults) -> Run:
    """Flags over the preset (``--quick`` over both) -> :class:`Run` (CliError on bad values).
    Call it before any JAX computation (see :func:`fast_compile_for_quick`)."""
    from jaxrrm import behaviour_data
    from jaxrrm.config import MAX_SEED

    if args.quick and args.preset != "default":
        raise cli.CliError(f"--quick and --preset {args.preset} exclude each other: --quick "
                              "is its own preset")
    fast_compile_for_quick(args)
    preset = PRESETS["quick" if args.quick else args.preset]
    seeds = args.seeds or preset.seeds or args.default_seeds
    if args.seed + seeds - 1 > MAX_SEED:
        raise cli.CliError(f"--seed {args.seed} with --seeds {seeds}: the run's seeds "
                              f"--seed .. --seed + --seeds - 1 must stay <= {MAX_SEED}")
    given = {k: getattr(args, k, None) for k in CQL_DEFAULTS}
    learners = getattr(args, "learners", None) or []
    if learners and not any(n in CQL_LEARNERS for n in learners):
        extra = [f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None]
        if extra:
            raise cli.CliError(f"{', '.join(extra)}: only for the CQL learners "
                                  f"({', '.join(CQL_LEARNERS)}), not for --learners "
                                  f"{' '.join(learners)}")
    cql = {k: CQL_DEFAULTS[k] if v is None else v for k, v in given.items()}
    if args.out is not None:
        outputs.check_output_path(args.out, args.overwrite)
        check_not_inside(args.data_dir, args.out)
    check_data_dir(args.data_dir)
    # Every check above needs no JAX runtime: only now start it (a multi-process start can
    # wait for its coordinator) and build the device mesh.
    from experiments import cli_distributed
    from jaxrrm import distributed

    try:
        mesh = cli_distributed.setup(args)
    except ValueError as e:
        raise cli.CliError(f"devices: {e}") from None
    if preset.horizon is not None:
        env_defaults.setdefault("horizon", preset.horizon)
    cfg, params = cli.make_env(args.env, **env_defaults)
    size = args.dataset_size or preset.dataset_size
    online = args.behaviour in behaviour_data.ONLINE_LEARNERS
    if args.behaviour_train_steps is not None and not online:
        raise cli.CliError(f"--behaviour-train-steps applies to the online behaviours "
                              f"({', '.join(behaviour_data.ONLINE_LEARNERS)}), not to "
                              f"--behaviour {args.behaviour}")
    if online and args.behaviour_train_steps is not None and args.behaviour_train_steps < size:
        raise cli.CliError(f"--behaviour-train-steps {args.behaviour_train_steps} is less "
                              f"than the dataset size {size}: the dataset is the last "
                              "--dataset-size transitions of the behaviour's training")
    steps = args.behaviour_train_steps or preset.behaviour_train_steps
    spec = dataset_spec(args.behaviour, size, args.seed, steps)
    return Run(name=name, preset="quick" if args.quick else args.preset, seeds=seeds,
               episodes=args.episodes or preset.episodes, cfg=cfg, params=params, spec=spec,
               hidden=args.hidden or preset.hidden, updates=args.updates or preset.updates,
               batch_size=args.batch_size or preset.batch_size, chunk_size=preset.chunk_size,
               eval_every_chunks=preset.eval_every_chunks, cql_alpha=cql["cql_alpha"],
               seed=args.seed, progress=not args.no_progress and distributed.is_writer(),
               data_dir=args.data_dir, rebuild=args.rebuild_dataset,
               behaviour_train_steps=steps, mesh=mesh, backbone=cql["backbone"],
               gamma=cql["gamma"])


def dataset_spec(behaviour: str, size: int, seed: int, behaviour_train_steps: int):
    """The :class:`~jaxrrm.behaviour_data.DatasetSpec` of a run's behaviour dataset: an online
    behaviour trains for ``max(behaviour_train_steps, size)`` transitions, a fixed one not at
    all (:class:`~experiments.cli.CliError` on an invalid setting)."""
    from jaxrrm import behaviour_data

    online = behaviour in behaviour_data.ONLINE_LEARNERS
    try:
        return behaviour_data.DatasetSpec(behaviour=behaviour, size=size, seed=seed,
                                    train_steps=max(behaviour_train_steps, size) if online else 0)
    except ValueError as e:
        raise cli.CliError(f"invalid dataset setting: {e}") from None


def check_not_inside(data_dir: Path, out: Path) -> None:
    """Refuse a ``--data-dir`` equal to or inside ``--out``: the output directory is written
    elsewhere and swapped in at the end, so a cache inside it would be replaced with it."""
    d, o = Path(data_dir).resolve(), Path(out).resolve()
    if d == o or o in d.parents:
        raise cli.CliError(f"--data-dir {data_dir} is inside --out {out}: the output "
                              "directory is replaced as a whole; keep the dataset cache elsewhere")


def check_data_dir(path: Path) -> None:
    """Refuse (CliError) a ``--data-dir`` that is not a directory or cannot be written (the
    cache writes new datasets there), before any work."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise cli.CliError(f"--data-dir {path} exists and is not a directory")
    outputs.check_writable_dir(path, "--data-dir")


def dataset(run: Run, spec=None, cfg=None, params=None):
    """Load or make the behaviour dataset (progress bar while making it)."""
    from jaxrrm import data, behaviour_data

    spec = spec or run.spec
    cfg = cfg or run.cfg
    params = params or run.params
    bar = cli.progress(None, f"dataset {spec.behaviour} {spec.size}", total=None,
                          enabled=run.progress)

    def progress(done, total, post):
        if bar.total != total:
            bar.reset(total=total)
            bar.set_description(f"dataset: training {spec.behaviour}" if spec.online
                                else f"dataset: collecting {spec.behaviour}")
        bar.n = done
        bar.set_postfix_str(post, refresh=False)
        bar.refresh()

    try:
        beh = behaviour_data.load_or_build(spec, cfg, params, run.data_dir, progress=progress,
                                     rebuild=run.rebuild, resumable=True)
    except (ValueError, data.DatasetError) as e:
        raise cli.CliError(f"dataset: {e}") from None
    finally:
        bar.close()
    if run.progress:
        how = "made" if beh.built else "reused"
        print(f"dataset {how}: {beh.path} ({beh.dataset.size} transitions, "
              f"{beh.seconds:.0f} s)", file=sys.stderr)
    return beh


def train_learner_envs(run: Run, label: str, learner_cfg, beh, test_keys, train_key,
                       test_envs: Dict[str, tuple], cfg=None, params=None):
    """Train ``run.seeds`` seeds of ``learner_cfg`` once on ``beh``'s dataset (under ``cfg,
    params``, default the run's) and evaluate them on ``test_keys`` under each of ``test_envs``
    (``{name: (cfg, params)}``) -> ``{name: MethodResult}``
    (:func:`jaxrrm.compare.train_and_evaluate_envs`); a non-finite loss or an invalid setting is
    a :class:`~experiments.cli.CliError` naming ``label``."""
    from jaxrrm import compare, train

    try:
        return compare.train_and_evaluate_envs(
            train_key, beh.dataset, cfg or run.cfg, params or run.params, learner_cfg,
            run.train_config(), test_keys, run.episodes, test_envs, progress=run.progress,
            progress_desc=label, mesh=run.mesh)
    except (train.NonFiniteLossError, ValueError) as e:
        raise cli.CliError(f"{label}: {e}") from None


def train_learner(run: Run, label: str, learner_cfg, beh, test_keys, train_key, cfg=None,
                  params=None):
    """:func:`train_learner_envs` with the training environment as the one test environment
    -> ``MethodResult``."""
    cfg, params = cfg or run.cfg, params or run.params
    return train_learner_envs(run, label, learner_cfg, beh, test_keys, train_key,
                              {label: (cfg, params)}, cfg, params)[label]


def evaluate_fixed(run: Run, names: Sequence[str], test_keys, cfg=None, params=None):
    """Evaluate baselines by name on the test keys (:func:`jaxrrm.compare.evaluate_policy`),
    with a progress bar."""
    from jaxrrm import baselines, compare

    cfg, params = cfg or run.cfg, params or run.params
    out = {}
    bar = cli.progress(list(names), "baselines", enabled=run.progress)
    for name in bar:
        bar.set_postfix_str(name)
        try:
            pol = baselines.make(name, cfg)
        except ValueError as e:
            raise cli.CliError(str(e)) from None
        out[name] = compare.evaluate_policy(pol, test_keys, cfg, params, run.episodes,
                                            mesh=run.mesh)
    return out


# --------------------------------------------------------------------------------------------
# Studies: a sweep of variants of the main job
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Variant:
    """One point of a study's sweep: a dataset, an environment and learner settings.

    Attributes:
      label: prefix of its methods' names in summary.json (``"<label> / <method>"``).
      value: the swept value, as reported (a number, or a name for a categorical sweep).
      cfg, params: environment of its dataset and of its test episodes (``None``: the run's).
      spec: its dataset (``None``: the run's).
      behaviour: a ready :class:`jaxrrm.behaviour_data.Behaviour`, or a function of no arguments
        that returns one when the variant's turn comes (overrides ``spec``).
      learner_overrides: extra fields of every learner's configuration (e.g. ``cql_alpha``).
      evaluate_behaviour: also evaluate the behaviour policy itself (``"<label> / behaviour"``).
      learners: the learners (:data:`LEARNERS` keys) to train on this variant (``None``: the
        study's).
    """

    label: str
    value: object
    cfg: object = None
    params: object = None
    spec: object = None
    behaviour: object = None
    learner_overrides: dict = dataclasses.field(default_factory=dict)
    evaluate_behaviour: bool = False
    learners: Optional[Sequence[str]] = None

    @property
    def own_env(self) -> bool:
        return self.cfg is not None or self.params is not None


def stats_of(summary_entry: dict) -> dict:
    """The metrics of a summary entry a sweep row carries."""
    return {k: summary_entry[k] for k in ("score", "relative_score", "sum_rate", "p5_rate",
                                          "return") if k in summary_entry}


def run_variants(run: Run, variants: Sequence[Variant], learners: Sequence[str],
                 baselines: Sequence[str], test_keys, train_key):
    """Evaluate the baselines, make (or reuse) each variant's dataset, train each learner on it
    and evaluate everything on the same test keys.

    When no variant has its own environment, the baselines are evaluated once (plain names) and
    the relative score of every method is against ``tdm``; otherwise they are evaluated in each
    variant's environment (``"<label> / <baseline>"``) and each variant's relative scores are
    against its own ``tdm``. ``tdm`` is always evaluated.

    Returns:
      ``(results, summary, rows, datasets)``: ``{label: MethodResult}``,
      :func:`jaxrrm.compare.summarize` of them, the sweep rows ``[{"value", "variant",
      "method", "label", "kind", "score", "relative_score", "sum_rate", "p5_rate",
      "return"}]`` (each metric
      ``{"mean", "ci95"}``; ``kind`` is ``"learner"``, ``"behaviour"`` or ``"baseline"``; the
      baselines appear once per variant only when the environments differ), and
      ``{label: dataset_info}`` of each variant's dataset.
    """
    from jaxrrm import compare

    names = list(dict.fromkeys(["tdm"] + list(baselines)))
    per_env = any(v.own_env for v in variants)
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
        raise cli.CliError(f"duplicate sweep values: {labels}")
    results: Dict[str, object] = {}
    datasets: Dict[str, dict] = {}
    groups = []   # (variant, {method: result label}, reference label)
    if not per_env:
        results.update(evaluate_fixed(run, names, test_keys))
    for v in variants:
        cfg, params = v.cfg or run.cfg, v.params or run.params
        members = {}
        if per_env:
            for name, res in evaluate_fixed(run, names, test_keys, cfg, params).items():
                results[f"{v.label} / {name}"] = res
                members[name] = (f"{v.label} / {name}", "baseline")
        beh = (v.behaviour() if callable(v.behaviour) else v.behaviour) or dataset(
            run, v.spec, cfg, params)
        datasets[v.label] = dataset_info(beh)
        if v.evaluate_behaviour and beh.policy is not None:
            label = f"{v.label} / behaviour"
            results[label] = compare.evaluate_policy(beh.policy, test_keys, cfg, params,
                                                     run.episodes, mesh=run.mesh)
            members["behaviour"] = (label, "behaviour")
        for name in (learners if v.learners is None else v.learners):
            method = LEARNERS[name]
            label = f"{v.label} / {method}"
            lc = run.learner_config(name, **v.learner_overrides)
            results[label] = train_learner(run, label, lc, beh, test_keys, train_key, cfg,
                                           params)
            members[method] = (label, "learner")
        groups.append((v, members, f"{v.label} / tdm" if per_env else "tdm"))
    if per_env:
        summary = {}
        for v, members, ref in groups:
            summary.update(compare.summarize({lab: results[lab] for lab, _ in
                                              members.values()}, ref))
    else:
        summary = compare.summarize(results, "tdm")
    rows = [{"value": v.value, "variant": v.label, "method": method, "label": lab,
             "kind": kind, **stats_of(summary[lab])}
            for v, members, _ in groups for method, (lab, kind) in members.items()]
    return results, summary, rows, datasets


def dataset_info(beh) -> dict:
    """Where a behaviour dataset came from (for summary.json). A dataset that is the tail of a
    saved one (``meta["tail_of"]``: that one's size) names the saved one's path and
    fingerprint."""
    info = {"behaviour": beh.meta.get("behaviour"), "size": int(beh.dataset.size),
            "path": None if beh.path is None else str(beh.path),
            "fingerprint": beh.meta.get("fingerprint"), "built": bool(beh.built),
            "seconds": float(beh.seconds), "mean_reward": float(beh.dataset.reward.mean())}
    if "tail_of" in beh.meta:
        info["tail_of"] = int(beh.meta["tail_of"])
    return info


def rows_of(rows: Sequence[dict], method: str) -> list:
    """The sweep rows of one method, in sweep order."""
    return [r for r in rows if r["method"] == method]


def run_study(args, run_: Run, variants: Sequence[Variant], *, learners: Sequence[str],
              baselines: Sequence[str], sweep_key: str, value_name: str, plot=None,
              analyse=None, extra_config: Optional[dict] = None):
    """The whole of a sweep study: :func:`run_variants` into an atomic output directory with the
    usual files (:func:`experiments.outputs.write_outputs`), ``summary.json``'s ``sweep_key``
    section (the rows), whatever ``analyse(results, summary, rows) -> dict`` adds to
    summary.json, and ``plot(out_dir, summary, rows, title)`` for the study's own figure. Prints
    the tables.

    Returns:
      ``(path, extra)``: the output directory and the study's sections of summary.json."""
    import jax

    from jaxrrm import evaluate

    out = outputs.OutputDir(args.out or outputs.default_out_dir(run_.name),
                            overwrite=args.overwrite)
    try:
        test_keys = evaluate.seed_keys(args.seed, run_.seeds)
        train_key = jax.random.fold_in(jax.random.key(args.seed), 0x0FF1)
        results, summary, rows, datasets = run_variants(run_, variants, learners, baselines,
                                                        test_keys, train_key)
        extra = {sweep_key: {"parameter": value_name, "values": [v.value for v in variants],
                             "rows": rows}, "datasets": datasets}
        if analyse is not None:
            extra.update(analyse(results, summary, rows))
        outputs.write_outputs(out, run_, results, summary, extra_summary=extra,
                              plots=not args.no_plots,
                              extra_config={"study": {"parameter": value_name,
                                                      "values": [v.value for v in variants],
                                                      **(extra_config or {})}})
        if plot is not None and not args.no_plots:
            cfg = run_.cfg
            plot(out, summary, rows, f"{cfg.num_aps} APs, {cfg.num_ues} UEs, {run_.seeds} seeds "
                                     f"x {run_.episodes} episodes")
        path = out.commit()
    except BaseException:
        out.abort()
        raise
    tables.print_table(run_, summary, results, path)
    tables.print_sweep(rows, value_name)
    return path, extra


#: Baselines the studies evaluate by default (``tdm`` is always added: the relative score's
#: reference): ``reward_greedy`` (the PF reward's own weighting), ``full_reuse`` (the PF rule
#: it generalizes) and ``exhaustive`` (the per-slot oracle).
STUDY_BASELINES = ("full_reuse", "reward_greedy", "exhaustive")

#: Seeds of a study by default (the main job's 16 would double every study's cost).
STUDY_SEEDS = 8


def add_study_arguments(p: argparse.ArgumentParser, learners: Sequence[str] = ("ctde",),
                        omit: Sequence[str] = (), learner_choices=None,
                        baselines: Sequence[str] = STUDY_BASELINES) -> None:
    """:func:`add_run_arguments` with the studies' defaults (:data:`STUDY_SEEDS` seeds, the
    given learners) and ``--baselines``."""
    from jaxrrm.baselines import NAMES

    add_run_arguments(p, learners=learners, omit=omit, learner_choices=learner_choices,
                      seeds=STUDY_SEEDS)
    p.add_argument("--baselines", nargs="+", choices=NAMES, default=list(baselines),
                   help="baselines evaluated on the same test episodes ('tdm' is always added: "
                        "it is the reference of the relative score)")


def sweep_values(args, flag: str, defaults: Dict[str, Sequence]):
    """The values of a sweep flag: the user's (each once), else the preset's default
    (``defaults`` keyed by ``"default"``, ``"paper"`` and ``"quick"``)."""
    given = getattr(args, flag.lstrip("-").replace("-", "_"))
    if given is not None:
        return cli.unique(given, flag)
    return list(defaults["quick" if args.quick else args.preset])
