"""Runs an evaluation's missing episodes, in this process or in `workers` processes, each with its own
scene and its own policy at batch 1 (as on a robot), and appends each result to DIR as it ends.

Each worker takes whole tasks' episodes in turn (a scene is built once per task: building one costs
seconds), so an interrupted evaluation loses at most the episodes in progress; rerunning it runs
only what `episodes.jsonl` lacks.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

from rdvla.devices.libero.scene import InitState, LiberoScene
from rdvla.devices.libero.suites import load_task
from rdvla.runtime.eval.episode import EpisodeSettings, PolicyFactory, run_episode
from rdvla.runtime.eval.report import write_video
from rdvla.runtime.eval.results import EpisodeResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpisodeSpec:
    suite: str
    task: int
    init: InitState
    video: bool = False  # write this episode's GIF

    @property
    def key(self) -> tuple[str, int, str]:
        return self.suite, self.task, str(self.init)


@dataclass(frozen=True)
class Job:
    episodes: tuple[EpisodeSpec, ...]
    render: str
    settings: EpisodeSettings
    factory: PolicyFactory
    out: Path
    max_steps: Optional[int] = None  # the suite's limit unless given
    record: Optional[Path] = None  # demonstrations: each episode also written there in the episode format


def _episodes(job: Job) -> Iterator[EpisodeResult]:
    scene: Optional[LiberoScene] = None
    policy = None
    try:
        for spec in job.episodes:
            if scene is None or (scene.task.suite.name, scene.task.index) != (spec.suite, spec.task):
                if scene is not None:
                    scene.close()
                scene = LiberoScene(load_task(spec.suite, spec.task), job.render, job.max_steps)
                policy = job.factory(scene)
            assert policy is not None
            result, frames = run_episode(scene, policy, spec.init, job.settings, keep_frames=spec.video, record=job.record)
            if frames is not None:
                write_video(job.out, result, frames)
            yield result
    finally:
        if scene is not None:
            scene.close()


def _worker(job: Job, results: "multiprocessing.Queue[object]") -> None:
    try:
        for result in _episodes(job):
            results.put(result)
    except BaseException as exc:  # the parent reports it; a worker's traceback is not the user's business
        results.put(exc if isinstance(exc, Exception) else RuntimeError("worker interrupted"))
    results.put(None)


def split(episodes: Sequence[EpisodeSpec], workers: int) -> list[tuple[EpisodeSpec, ...]]:
    """Round-robin over tasks' runs of episodes, so each worker's episodes of one task are contiguous."""
    shares: list[list[EpisodeSpec]] = [[] for _ in range(min(workers, len(episodes)))]
    for index, spec in enumerate(episodes):
        shares[index % len(shares)].append(spec)
    return [tuple(sorted(share, key=lambda s: (s.task, s.init.kind, s.init.index))) for share in shares]


def run(episodes: Sequence[EpisodeSpec], render: str, settings: EpisodeSettings, factory: PolicyFactory, out: Path,
        workers: int, on_result: Callable[[EpisodeResult], None], record: Optional[Path] = None,
        max_steps: Optional[int] = None) -> None:
    """Run `episodes`, calling `on_result` in this process as each one ends (in the order they end)."""
    if not episodes:
        return
    if workers == 1:
        for result in _episodes(Job(tuple(episodes), render, settings, factory, out, max_steps, record)):
            on_result(result)
        return
    context = multiprocessing.get_context("spawn")  # a fresh interpreter per worker: no GL context or thread inherited
    results: "multiprocessing.Queue[object]" = context.Queue()
    processes = [context.Process(target=_worker, args=(Job(share, render, settings, factory, out, max_steps, record), results), daemon=True)
                 for share in split(episodes, workers)]
    for process in processes:
        process.start()
    running = len(processes)
    try:
        while running:
            try:
                item = results.get(timeout=1.0)
            except queue.Empty:
                if not any(p.is_alive() for p in processes):
                    raise RuntimeError("an evaluation worker died without a result (out of memory?)") from None
                continue
            if item is None:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                assert isinstance(item, EpisodeResult)
                on_result(item)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()
