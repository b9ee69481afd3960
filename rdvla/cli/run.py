"""`rdvla run`: the onboard control loop, cameras -> policy -> action queue -> safety filter -> robot.

A simulator setup (examples/libero.yaml) puts a LIBERO scene in place of the cameras and the robot: the
same loop, stepped once per action on a simulated clock, waiting for each query as `rdvla eval` does.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from rdvla.cli.arguments import (add_backend_options, add_bundle_argument, add_halting_options, int_in, open_policy, positive_float,
                                 positive_int)
from rdvla.cli.inputs import instruction, seed

# A policy trained on LIBERO's operational-space controller: policy units -> metres and radians.
LIBERO_ACTION_SCALE = (0.05, 0.5)
DEFAULT_RATE_HZ = 10.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the onboard control loop: cameras -> policy -> safety filter -> robot",
        description=textwrap.fill("Run a bundle as a robot's policy: camera observations go through the policy, its action chunks "
        "through an action queue (execution horizon, asynchronous refill, blending) and a safety filter to the robot, at "
        "the control rate. A dry run by default: actions are computed, filtered and logged, not sent; --execute sends "
        "them. With --recording and --robot sim it needs no setup file (desk runs); a simulator setup file runs a LIBERO "
        "scene instead of a robot, one control step per action. One JSON line per step goes to the "
        "log, and a summary at the end. Ctrl+C stops after the current cycle with the arm holding its pose; a second "
        "Ctrl+C halts the robot at once.", 100),
        epilog="examples: rdvla run bundle/ --config setup.yaml --instruction 'open the drawer' --execute\n"
        "          rdvla run bundle/ --recording episode.db3 --robot sim --instruction 'open the drawer' --steps 300\n"
        "          rdvla run bundle/ --config examples/libero.yaml --execute",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_bundle_argument(p)
    add_backend_options(p)
    p.add_argument("--config", type=Path, metavar="SETUP.yaml",
                   help="robot setup: cameras, robot, control rate, limits; or a simulator (examples/libero.yaml)")
    p.add_argument("--instruction", type=instruction, help="the task, in words (required, except with a simulator setup, "
                   "where the task's own words are the default)")
    p.add_argument("--execute", action="store_true", help="send actions to the robot (default: dry run)")

    desk = p.add_argument_group("desk overrides")
    desk.add_argument("--recording", type=Path, action="append", metavar="FILE",
                      help="a .db3/.bag recording stands in for the cameras: once for all cameras, or once per camera "
                      "in policy order (third-person, then wrist)")
    desk.add_argument("--playback", choices=("step", "real-time"), default="step",
                      help="--recording: one recorded frame per step (default, deterministic) or the recorded pace")
    desk.add_argument("--robot", choices=("sim",),
                      help="sim: a kinematic simulated arm instead of the setup's robot (without --config: default "
                      "limits and LIBERO's action scale, 0.05 m and 0.5 rad per policy unit)")
    desk.add_argument("--steps", type=positive_int, metavar="N", help="stop after N control steps (default: until stopped)")
    desk.add_argument("--log", type=Path, metavar="PATH",
                      help="step log, JSON lines (default runs/run-DATE-TIME.jsonl; DIR/steps.jsonl with --record)")
    desk.add_argument("--overwrite", action="store_true", help="replace an existing --log file or the episode in --record DIR")
    desk.add_argument("--record", type=Path, metavar="DIR",
                      help="save the episode in DIR: camera recordings, episode.json and the step log (proprio, "
                      "instruction, actions), for replay on a desk and for calibration")

    loop = p.add_argument_group("loop")
    loop.add_argument("--rate", type=positive_float, metavar="HZ", help="control rate (default: the setup's control_rate_hz, else 10)")
    loop.add_argument("--mode", choices=("async", "sync"),
                      help="async (default with a robot): the next chunk is inferred on a worker thread while the "
                      "current one executes; sync (always with a simulator): the loop waits for each query")
    loop.add_argument("--refill-at", type=int_in(0), default=2, metavar="N",
                      help="async: start the next query once at most N actions remain queued (default 2)")
    loop.add_argument("--blend", choices=("replace", "average", "crossfade"), default="replace",
                      help="where a new chunk overlaps queued actions: the new plan wins (default), the mean, or a linear crossfade")
    loop.add_argument("--horizon", default="fixed:5",
                      help="actions executed per chunk: fixed[:N] (default fixed:5), binary[:TAU], dynamic, "
                      "linear[:HMIN:HMAX:TAU], linear-code")
    add_halting_options(loop, "the bundle's adaptive rule")
    loop.add_argument("--deadline-ms", type=positive_float, metavar="MS",
                      help="query deadline (default: derived from the period: what is left of it in sync mode, the "
                      "time until the queue runs dry in async mode)")
    loop.add_argument("--gripper", choices=("libero", "raw"), default="libero",
                      help="gripper post-processing: libero binarises and inverts (-1 open, +1 close; default), raw passes it on")
    loop.add_argument("--seed", type=seed, default=0, help="query n starts from the initial latent of seed + n (default 0)")

    safety = p.add_argument_group("safety")
    safety.add_argument("--max-faults", type=positive_int, default=10, metavar="N",
                        help="stop after N consecutive steps with the same fault (default 10)")
    safety.add_argument("--max-reconnect-s", type=positive_float, default=5.0, metavar="S",
                        help="stop when a camera has been reconnecting for S seconds (default 5)")
    safety.add_argument("--max-linear-accel", type=positive_float, default=1.0, metavar="MPS2",
                        help="limit on the change of commanded linear velocity, m/s^2 (default 1.0)")
    safety.add_argument("--max-angular-accel", type=positive_float, default=5.0, metavar="RADPS2",
                        help="limit on the change of commanded angular velocity, rad/s^2 (default 5.0)")

    status = p.add_mutually_exclusive_group()
    status.add_argument("--status", dest="status", action="store_true", default=None,
                        help="show the live status line (default: when stderr is a terminal)")
    status.add_argument("--no-status", dest="status", action="store_false", help="never show the status line")
    p.set_defaults(run=run)


def loop_config(args: argparse.Namespace, rate_hz: float, instruction: str, simulated: bool = False) -> Any:
    from rdvla.runtime.control.config import LoopConfig
    from rdvla.runtime.control.safety import SafetyConfig
    from rdvla.runtime.halting import parse_halting
    from rdvla.runtime.horizon import parse_horizon

    given = (args.halting, args.iterations, args.min_iterations, args.max_iterations)
    # None: the bundle's halting; parse_halting refuses --min/--max-iterations without --halting.
    halting = parse_halting(*given) if any(option is not None for option in given) else None
    return LoopConfig(
        instruction=instruction, rate_hz=rate_hz, mode=args.mode or ("sync" if simulated else "async"),
        refill_at=args.refill_at, blend=args.blend, horizon=parse_horizon(args.horizon), halting=halting,
        deadlines=not simulated,
        deadline_s=None if args.deadline_ms is None else args.deadline_ms / 1e3, execute=args.execute, max_steps=args.steps,
        gripper=args.gripper, seed=args.seed,
        safety=SafetyConfig(max_linear_accel_mps2=args.max_linear_accel, max_angular_accel_radps2=args.max_angular_accel,
                            max_consecutive_faults=args.max_faults, max_reconnect_s=args.max_reconnect_s),
    )


def _check_arguments(args: argparse.Namespace, simulated: bool) -> None:
    if simulated:
        _check_simulator_arguments(args)
    elif args.instruction is None:
        raise ValueError("--instruction: required with a robot; give the task in words, e.g. --instruction 'open the drawer'")
    if args.record is not None and args.log is not None:
        raise ValueError("--record DIR keeps its step log in DIR/steps.jsonl; leave out --log")


def _check_simulator_arguments(args: argparse.Namespace) -> None:
    """A simulator setup decides these itself: its scene is the cameras and the robot, stepped at the suite's
    rate, and it waits for every query."""
    if args.record is not None:
        raise ValueError(f"--record: {args.config} is a simulator setup; record simulated episodes with "
                         "`rdvla eval BUNDLE --suite SUITE --record DIR`")
    given = [("--recording", args.recording), ("--robot", args.robot), ("--rate", args.rate),
             ("--deadline-ms", args.deadline_ms), ("--mode async", args.mode == "async")]
    for option, value in given:
        if value:
            raise ValueError(f"{option}: {args.config} is a simulator setup, stepped once per action and waiting for "
                             "each query; leave out the option")


def _camera_configs(args: argparse.Namespace, setup: Any, count: int) -> list[Any]:
    """The cameras in policy order: the setup's, or recordings standing in for them."""
    from rdvla.devices.cameras.base import ROLE_ORDER
    from rdvla.devices.cameras.registry import kind_playing

    if not args.recording:
        configs = list(setup.cameras)
        if len(configs) != count:
            raise ValueError(f"the policy takes {count} camera images; {args.config} describes {len(configs)} cameras")
        return configs
    roles = [c.role for c in setup.cameras] if setup is not None else list(ROLE_ORDER[:count])
    if len(roles) != count:
        raise ValueError(f"the policy takes {count} camera images; {args.config} describes {len(roles)} cameras")
    files = list(args.recording)
    for path in files:  # before the run claims its log: the recording is opened only when the loop starts
        if not path.is_file():
            raise ValueError(f"--recording {path}: {'a directory' if path.is_dir() else 'not found'}; give a .db3/.bag "
                             "recording (`rdvla cameras --recording FILE` describes one)")
    if len(files) == 1:
        files = files * count
    if len(files) != count:
        raise ValueError(f"give --recording once for all cameras or {count} times (one per camera), not {len(args.recording)}")
    return [kind_playing(f).replay(f, role, args.playback == "real-time") for f, role in zip(files, roles)]


def _record_cameras(directory: Path, configs: list[Any], overwrite: bool) -> tuple[list[Any], list[dict[str, str]], Any]:
    """Claim the episode directory; live cameras record into it, recordings being replayed are copied there.
    Returns the camera configs, their description, and the episode's step log."""
    from rdvla.devices.cameras.registry import kind_of
    from rdvla.runtime.control.episode import copy_recordings, open_episode, replay_copies

    replayed = [(c.role, Path(c.recording)) for c in configs if c.recording is not None]
    # Each live camera records into DIR/<role><suffix>, the suffix its kind records now.
    targets = {c.role: directory / f"{c.role}{kind_of(c).recording_suffix()}" for c in configs if c.recording is None}
    step_log = open_episode(directory, [*replay_copies(replayed).values(), *(t.name for t in targets.values())],
                            [source for _, source in replayed], overwrite=overwrite)
    described = copy_recordings(directory, replayed)
    out = []
    for config in configs:
        if config.recording is None:
            kind = kind_of(config)
            described.append({"role": config.role, "recording": targets[config.role].name, "source": kind.describe(config)})
            config = kind.record_into(config, targets[config.role])
        out.append(config)
    return out, described, step_log


def _robot(args: argparse.Namespace, setup: Any, clock: Any) -> Any:
    from rdvla.devices.config import build_robot
    from rdvla.devices.robots.base import RobotLimits
    from rdvla.devices.robots.sim import SimRobot

    if args.robot == "sim":
        limits = setup.limits if setup is not None else RobotLimits()
        scale = setup.robot.action_scale if setup is not None else LIBERO_ACTION_SCALE
        return SimRobot(limits, action_scale=scale, clock=clock)
    return build_robot(setup, clock=clock)


def _simulated_devices(setup: Any, task: Any, clock: Any, cleanup: contextlib.ExitStack) -> tuple[Any, Any]:
    """The scene's two cameras and its arm, the scene reset to the setup's initial state."""
    from rdvla.devices.libero.camera import scene_cameras
    from rdvla.devices.libero.robot import LiberoRobot
    from rdvla.devices.libero.scene import LiberoScene

    scene = LiberoScene(task, setup.render)
    cleanup.callback(scene.close)
    scene.reset(setup.init)
    return scene_cameras(scene, clock), LiberoRobot(scene)


def run(args: argparse.Namespace) -> int:
    from rdvla.devices.config import SimulatorSetup, build_cameras, load_setup
    from rdvla.runtime.control import episode
    from rdvla.cli.run_display import StatusLine, format_summary
    from rdvla.runtime.control.broker import load_on, single_worker
    from rdvla.runtime.control.loop import ControlLoop, stop_on_signals
    from rdvla.runtime.control.pacing import SteppedClock
    from rdvla.runtime.control.step_log import StepLog
    from rdvla.runtime.control.subscriber import Subscriber
    from rdvla.runtime.outputs import check_apart, check_new_file

    if args.config is None and (not args.recording or args.robot != "sim"):
        raise ValueError("give --config SETUP.yaml, or --recording FILE and --robot sim for a run on a desk")
    setup = load_setup(args.config) if args.config is not None else None
    simulated = isinstance(setup, SimulatorSetup)
    _check_arguments(args, simulated)
    # Outputs are checked before the policy loads (minutes for TensorRT engines), then claimed.
    log_path = args.log or Path("runs") / f"run-{datetime.now():%Y%m%d-%H%M%S}.jsonl"
    for option, path in (("--log", args.log), ("--record", args.record)):
        if path is not None:
            check_apart(path, args.bundle, option=option, what="bundle")
    if args.record is not None:
        episode.check_episode_directory(args.record, overwrite=args.overwrite)
    else:
        check_new_file(log_path, overwrite=args.overwrite, option="--log")
    task = None
    if isinstance(setup, SimulatorSetup):
        from rdvla.devices.libero.robot import CONTROL_RATE_HZ
        from rdvla.devices.libero.suites import load_task

        task = load_task(setup.suite, setup.task)  # a missing simulator, task or state is said before the policy loads
        if setup.init.kind == "fixed" and setup.init.index >= len(task.init_states):
            raise ValueError(f"{args.config}: simulator.init: {setup.suite} task {setup.task} has initial states "
                             f"0..{len(task.init_states) - 1}, not {setup.init.index}")
        rate = CONTROL_RATE_HZ
    else:
        rate = args.rate if args.rate is not None else (setup.control_rate_hz if setup is not None else DEFAULT_RATE_HZ)
    config = loop_config(args, rate, args.instruction if task is None else (args.instruction or task.language), simulated)
    stepped = SteppedClock() if simulated else None
    clock, sleep = (stepped.now, stepped.sleep) if stepped is not None else (time.monotonic, time.sleep)
    with contextlib.ExitStack() as cleanup:  # undone in reverse: scene, step log, policy, worker
        executor = single_worker() if config.mode == "async" else None
        if executor is not None:
            cleanup.callback(executor.shutdown, wait=True)
        policy, precision = load_on(executor, lambda: open_policy(args.bundle, args))
        cleanup.callback(load_on, executor, policy.close)
        info: dict[str, Any] = {"bundle": str(args.bundle), "backend": policy.backend.name, "precision": precision,
                                 "preprocessing": policy.preprocessing}
        num_images = policy.bundle.dims.num_images
        if simulated and num_images != 2:
            raise ValueError(f"the policy takes {num_images} camera images; a LIBERO scene has 2")
        configs = [] if simulated else _camera_configs(args, setup, num_images)
        if args.record is not None:  # never with a simulator (refused above)
            configs, info["cameras"], step_log = _record_cameras(args.record, configs, args.overwrite)
            log_path = step_log.path
            info["robot"] = "sim" if setup is None or args.robot == "sim" else setup.robot.type
        else:
            step_log = StepLog(log_path, overwrite=args.overwrite)
        cleanup.callback(step_log.close)  # a run that never starts still releases its log
        if isinstance(setup, SimulatorSetup):
            info["simulator"] = f"{setup.suite} task {setup.task} {setup.init} ({setup.render} render)"
            cameras, robot = _simulated_devices(setup, task, clock, cleanup)
        else:
            cameras = build_cameras(setup, configs, clock=clock)
            robot = _robot(args, setup, clock)
        if args.record is not None:
            episode.write_episode_header(args.record, {**info, "instruction": config.instruction, "control_rate_hz": rate})
        show = sys.stderr.isatty() if args.status is None else args.status
        subscribers: list[Subscriber] = [step_log]
        if show:
            subscribers.append(StatusLine(sys.stderr, args.steps, config.execute))
        loop = ControlLoop(cameras, policy, robot, config, clock=clock, sleep=sleep, executor=executor,
                           subscribers=subscribers, run_info=info)
        print(f"{'EXECUTING' if config.execute else 'dry run (nothing sent to the robot; --execute to act)'}: "
              f"{policy.backend.name} {precision}, {policy.preprocessing} preprocessing, {config.mode} at {rate:g} Hz; log {log_path}",
              file=sys.stderr)
        with stop_on_signals(loop):
            summary = loop.run()
    if args.record is not None:
        episode.finish_episode(args.record, summary)
    for line in format_summary(summary):
        print(line)
    print(f"step log: {log_path}")
    return 1 if summary.stopped_on_fault else 0
