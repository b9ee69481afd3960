"""`rdvla eval`: closed-loop success of a policy in the LIBERO simulator, through the control loop."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from rdvla.cli.arguments import add_backend_options, add_halting_options, positive_int
from rdvla.runtime.manifest import MANIFEST

SUITE_NAMES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")


def index_list(text: str) -> list[int]:
    """`0-9,40` -> [0, ..., 9, 40]: sorted, without repeats."""
    values: set[int] = set()
    try:
        for part in text.split(","):
            low, _, high = part.partition("-")
            first, last = int(low), int(high or low)
            if first < 0 or last < first:
                raise ValueError
            values.update(range(first, last + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected indices like 0-9,40, got {text!r}") from None
    return sorted(values)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="closed-loop success in the LIBERO simulator (a bundle, a checkpoint, or the scripted expert)",
        description=textwrap.fill(
            "Run a policy closed loop in the LIBERO simulator through the same control loop as a robot, with the authors' "
            "evaluation protocol (256 px cameras rotated 180 degrees, 8-d proprio, 10 settle steps, the suite's step limit, "
            "the suite's fixed initial states: episode i starts from state i). SOURCE is a bundle (run on --backend at "
            "--precision), a checkpoint directory (the PyTorch reference), or `expert` (the scripted demonstrator, where one "
            "exists). Results go to DIR: episodes.jsonl (one line per episode, with each query's iterations, stop reason, "
            "latency and the scene's state), summary.json (success rate, Wilson 95 %% interval, mean iterations, per task), "
            "plots and GIFs. Rerunning the same command resumes: only episodes missing from DIR run; asking for more "
            "episodes or other initial states adds only those. Other policy settings into the same DIR are refused unless "
            "--overwrite. Needs the simulator: pip install -e '.[libero]'.", 100),
        epilog="examples:\n"
        "  rdvla eval expert --suite libero_spatial --tasks 0 --episodes-per-task 2 --out eval/expert\n"
        "  rdvla eval bundle/ --suite libero_spatial --tasks 0 --halting mse:1e-3 --workers 2 --out eval/adaptive\n"
        "  rdvla eval checkpoint/ --suite libero_spatial --init-states 0-9 --iterations 4 --out eval/ref4",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", metavar="SOURCE", help="bundle directory, checkpoint directory, or `expert`")
    p.add_argument("--suite", required=True, choices=SUITE_NAMES, help="the LIBERO suite")
    p.add_argument("--tasks", type=index_list, metavar="0,3", help="task indices of the suite (default: all)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--episodes-per-task", type=positive_int, metavar="N",
                       help="episodes per task, from the fixed initial states 0..N-1 (default 50: all of them)")
    which.add_argument("--init-states", type=index_list, metavar="0-9,40", help="these fixed initial states of each task")
    which.add_argument("--random-inits", type=index_list, metavar="SEEDS",
                       help="random placements drawn from these seeds instead of the fixed states (demonstrations; "
                       "never the held-out evaluation)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="results directory (resumed when it exists)")
    p.add_argument("--render", choices=("default", "fast"), default="default",
                   help="default: robosuite's own images, as released checkpoints saw them; fast: cheap settings "
                   "(no multisampling, shadows, reflections), for CI and policies trained on fast renders")
    add_halting_options(p, "12 iterations, the authors' evaluation default")
    p.add_argument("--horizon", help="actions executed per chunk: fixed[:N] (default fixed:5, the authors'; the expert "
                   "answers every step), binary[:TAU], dynamic, linear[:HMIN:HMAX:TAU], linear-code")
    add_backend_options(p)
    p.add_argument("--unnorm-key", help="checkpoint: the dataset key of dataset_statistics.json (default: the suite's)")
    p.add_argument("--workers", type=positive_int, default=1, metavar="N",
                   help="episodes run in N processes, each with its own simulator and policy at batch 1 (default 1)")
    p.add_argument("--video", type=int, default=0, metavar="K", help="write the first K episodes as GIFs under DIR/videos/")
    p.add_argument("--record", type=Path, metavar="DEMOS",
                   help="also write each episode in the project's episode format under DEMOS/<suite>_task<k>_<init>/ "
                   "(images as the policy sees them, proprio, executed actions): demonstrations to train on, data for "
                   "`rdvla calibrate`")
    p.add_argument("--action-noise", type=float, default=0.0, metavar="SIGMA",
                   help="disturb the arm: correlated Gaussian noise of this standard deviation (controller units, "
                   "1.0 = 5 cm) added to the translation the simulator executes, not to the logged action. With "
                   "`expert --record`: demonstrations that recover from drift (DART); with a policy: a robustness "
                   "check. Default 0")
    p.add_argument("--max-steps", type=positive_int, metavar="N",
                   help="end episodes after N control steps instead of the suite's limit (a quick check; recorded in "
                   "the settings)")
    p.add_argument("--overwrite", action="store_true", help="discard DIR's episodes when the settings changed")
    p.set_defaults(run=run)


def source_kind(source: str) -> str:
    if source == "expert":
        return "expert"
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{source} not found: give a bundle directory, a checkpoint directory or `expert`")
    return "bundle" if (path / MANIFEST).is_file() else "checkpoint"


def make_policy(kind: str, source: str, options: dict[str, Any], scene: Any) -> Any:
    """The policy of one worker process (module level, so worker processes can be handed it)."""
    if kind == "expert":
        from rdvla.runtime.eval.expert import ExpertPolicy

        return ExpertPolicy(scene)
    return _loaded(kind, source, tuple(sorted(options.items())))


@functools.lru_cache(maxsize=1)
def _loaded(kind: str, source: str, options: tuple[tuple[str, Any], ...]) -> Any:
    """Loaded once per process, whatever the number of tasks it runs."""
    settings = dict(options)
    if kind == "bundle":
        from rdvla.runtime.policy import Policy

        return Policy.load(source, backend=settings["backend"], precision=settings["precision"],
                           preprocessing=settings["preprocessing"])
    from rdvla.export.reference_policy import ReferencePolicy

    return ReferencePolicy(Path(source), settings["unnorm_key"], preprocessing=settings["preprocessing"])


def _check_source(kind: str, source: str, args: argparse.Namespace, dataset: str) -> dict[str, Any]:
    """What runs the source, checked before any episode: the backend options fit the source, and its statistics
    are the suite's dataset."""
    if kind != "bundle" and (args.backend or args.precision or args.checkpoint):
        raise ValueError(f"--backend/--precision/--checkpoint apply to bundles; {source} is {'the expert' if kind == 'expert' else 'a checkpoint'}")
    if kind == "expert":
        return {}
    if kind == "bundle":
        from rdvla.runtime.bundle import Bundle

        # Its files are hashed once, when each worker's Policy opens it; the dataset key needs no hashing.
        key = Bundle.open(Path(source), verify_hashes=False).norm_stats.key
        if args.unnorm_key is not None:
            raise ValueError("--unnorm-key applies to checkpoints; a bundle carries the statistics it was exported with")
        if key != dataset:
            raise ValueError(f"{source} was exported with the statistics of {key!r}, not {args.suite}'s {dataset!r}: "
                             f"re-export its checkpoint with --unnorm-key {dataset}")
        backend = args.backend or "onnxruntime"
        precision = args.precision or ("fp16" if backend == "tensorrt" else "fp32")
        return {"backend": backend, "precision": precision, "preprocessing": args.preprocessing}
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise ValueError(f"{source} is a checkpoint: running it needs the workstation install (pip install 'rdvla[export]')")
    statistics = Path(source) / "dataset_statistics.json"
    try:
        keys = json.loads(statistics.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{statistics}: not a readable dataset_statistics.json ({exc}); is {source} a checkpoint?") from None
    key = args.unnorm_key or dataset
    if key not in keys:
        raise ValueError(f"--unnorm-key {key}: {source}'s dataset_statistics.json holds {', '.join(sorted(keys))}")
    return {"unnorm_key": key, "preprocessing": args.preprocessing}


def run(args: argparse.Namespace) -> int:
    from rdvla.devices.libero.experts import check_task
    from rdvla.devices.libero.scene import InitState
    from rdvla.devices.libero.suites import load_task, suite, task_count
    from rdvla.runtime.eval import report, results, runner
    from rdvla.runtime.eval.episode import EpisodeSettings
    from rdvla.runtime.halting import parse_halting
    from rdvla.runtime.horizon import parse_horizon

    if not args.verbose:  # one progress line per episode says what the loop's own start and stop lines would
        logging.getLogger("rdvla.runtime.control").setLevel(logging.WARNING)
    if args.video < 0:
        raise ValueError(f"--video {args.video}: give a number of episodes >= 0")
    if not 0.0 <= args.action_noise <= 1.0:
        raise ValueError(f"--action-noise {args.action_noise}: give a standard deviation in controller units, 0..1")
    chosen = suite(args.suite)
    kind = source_kind(args.source)
    halting = parse_halting(args.halting, args.iterations, args.min_iterations, args.max_iterations)
    horizon = parse_horizon(args.horizon or ("fixed:1" if kind == "expert" else "fixed:5"))
    options = _check_source(kind, args.source, args, chosen.dataset)
    tasks_in_suite = task_count(args.suite)
    tasks = args.tasks if args.tasks is not None else list(range(tasks_in_suite))
    if tasks[-1] >= tasks_in_suite:
        raise ValueError(f"--tasks: {args.suite} has tasks 0..{tasks_in_suite - 1}, not {tasks[-1]}")
    if kind == "expert":
        for task in tasks:
            check_task(args.suite, task)  # a task without an expert is refused before any scene is built
    if args.random_inits is not None:
        inits = [InitState("random", seed) for seed in args.random_inits]
    else:
        indices = args.init_states if args.init_states is not None else list(range(args.episodes_per_task or 50))
        for task in tasks:
            states = len(load_task(args.suite, task).init_states)
            if indices[-1] >= states:
                raise ValueError(f"{args.suite} task {task} has initial states 0..{states - 1}, not {indices[-1]}")
        inits = [InitState("fixed", i) for i in indices]
    settings = {"source": str(Path(args.source).resolve()) if kind != "expert" else "expert", "kind": kind,
                "suite": args.suite, "render": args.render, "halting": str(halting) if kind != "expert" else None,
                "horizon": repr(horizon), "max_steps": args.max_steps or chosen.max_steps, "action_noise": args.action_noise, **options}
    results.check_settings(args.out, settings, overwrite=args.overwrite)
    done = {r.key for r in results.read_episodes(args.out)}
    planned = [runner.EpisodeSpec(args.suite, task, init) for task in tasks for init in inits]
    missing = [spec for spec in planned if spec.key not in done]
    missing = [runner.EpisodeSpec(s.suite, s.task, s.init, video=i < args.video) for i, s in enumerate(missing)]
    print(f"eval {args.source} ({kind}{', ' + options['backend'] + ' ' + options['precision'] if kind == 'bundle' else ''}) "
          f"on {args.suite} tasks {','.join(map(str, tasks))}, {len(inits)} initial states each, {args.render} render: "
          f"{len(planned) - len(missing)} of {len(planned)} episodes already in {args.out}, {len(missing)} to run")
    progress = _Progress(len(missing))
    factory = functools.partial(make_policy, kind, args.source, options)
    runner.run(missing, args.render, EpisodeSettings(halting if kind != "expert" else None, horizon, args.action_noise), factory, args.out,
               args.workers, lambda result: (results.append_episode(args.out, result), progress.update(result)), args.record,
               args.max_steps)
    progress.finish()
    finished = [r for r in results.read_episodes(args.out) if r.key in {s.key for s in planned}]
    summary = results.summarize(finished, settings)
    results.write_summary(args.out, summary)
    report.write_plots(args.out, finished)
    low, high = summary["wilson95"]
    print(f"success {summary['successes']}/{summary['episodes']} = {summary['success_rate']:.1%} "
          f"(Wilson 95 % {low:.1%}..{high:.1%}), mean iterations {summary['mean_iterations']}")
    for task, block in summary["tasks"].items():
        print(f"  task {task}: {block['successes']}/{block['episodes']}  mean iterations {block['mean_iterations']}")
    print(f"wrote {args.out / results.SUMMARY_FILE}")
    return 0


class _Progress:
    def __init__(self, total: int) -> None:
        self.total = total
        self.done = self.successes = 0
        self.start = time.monotonic()

    def update(self, result: Any) -> None:
        self.done += 1
        self.successes += bool(result.success)
        rate = self.successes / self.done
        elapsed = time.monotonic() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        print(f"\r[{self.done}/{self.total}] success {self.successes}/{self.done} ({rate:.0%})  "
              f"last: task {result.task} {result.init} {'ok' if result.success else 'fail'} in {result.steps} steps  "
              f"eta {eta / 60:.0f} min", end="\n" if not sys.stderr.isatty() else "", file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.done and sys.stderr.isatty():
            print(file=sys.stderr)
