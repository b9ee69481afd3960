"""Behaviour cloning of a small RD-VLA through the reference model, with the authors' recipe.

What is the authors' (shared/rdvla_spec.md):
- loss: L1 between the predicted (B, 8, 7) chunk and the normalised targets, no clamp on the output (1.10);
- depth: one draw per forward, tau ~ N(ln r - 0.125, 0.5^2), n = clip(Poisson(min(e^tau, 100)) + 1, 1, 64);
  max(0, n - k) iterations without gradient, then min(k, n) with, the loss on the final decode only (2.6);
- head initialisation (2.6), the VLM's 64 action queries zero-initialised (1.6);
- AdamW (weight decay 0.01, torch's default), gradient clipping at 1.0, linear warm-up from 0.1 lr, then a
  constant rate (their MultiStepLR decays only after 200k steps) (1.10); batch 16 (5); `decay_steps` adds a
  linear fall to 0.1 lr over a run's last steps (a run of thousands of steps ends where theirs is still constant);
- inputs exactly as deployed: two cameras through the project's preprocessing, proprio and actions with
  BOUNDS_Q99 (see `rdvla.export.demonstrations`); token embeddings are not trained (1.10).

Where this deviates, and why (a 2-core CPU, tens of minutes, no pretrained weights to start from):
- the model trains from scratch at a reduced preset's size (default `small`: towers of width 64 at patch size 28,
  an 8-layer LLM of width 64 read by a `5_8-8_8` head; see rdvla.export.presets), every weight but the token
  embeddings, instead of LoRA (r 64) on a pretrained VLM: LoRA adapts pretrained features, and there are none;
- the LLM attends with PyTorch's fused attention (the reference's eager attention is the same math, and is what
  the exported graphs compute);
- the learning rate defaults to 1e-3 rather than 2e-4: small models trained from scratch need the larger step
  to learn within a few thousand steps;
- the mean depth r and the TBPTT depth k are arguments (released: r = 32, k = 8): every iteration costs time
  on the CPU, and a policy evaluated at 12 iterations can be trained at r = 12 (the code's default);
- image augmentation is a random shift of each camera's image by up to `shift_px` pixels (edges replicated)
  instead of the authors' random crops of 90 % area and colour jitter: the deployed preprocessing (centre crop
  of 90 % area) is computed once per frame and cached, and a shift of the cached crop moves the view as far as
  their crops do (a 212 px crop inside 224 px lies up to 6 px off centre); colour jitter is left out, the
  simulator's colours do not vary;
- the model computes in FP32 (the authors' bf16 is slow on a CPU); the checkpoint is written in bf16 as theirs.

A run is deterministic for its seed: the data order, each step's depth and initial latent come from
generators seeded by (seed, step), so a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from rdvla.export.checkpoint import save_checkpoint, vlm_config_from_json
from rdvla.export.demonstrations import (
    DemonstrationError,
    Episode,
    TrainingSamples,
    find_episodes,
    fingerprint,
    read_episode,
    succeeded,
    training_samples,
    write_frame_cache,
)
from rdvla.export.head import sample_iterations, truncated_bptt_forward
from rdvla.export.model import RDVLA
from rdvla.export.presets import preprocessor_config, preset_config
from rdvla.export.tokenizer_files import write_tokenizer_files
from rdvla.runtime.outputs import atomic_write, publish_directory, scratch_directory
from rdvla.runtime.preprocess.config import DEFAULT_CONFIG
from rdvla.runtime.prompt import PromptTokenizer

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "train_state.pt"
CURVE_FILE = "learning_curve.csv"
FRAMES_FILE = "frames.npy"
FRAMES_INDEX = "frames.json"
TOKENIZER_DIR = "tokenizer"
STATISTICS_FILE = "dataset_statistics.json"
CURVE_FIELDS = ("step", "loss", "lr", "iterations", "seconds")
TOKENIZER_VOCAB = 1000


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides a run's result; a resumed run must have the same (only `steps` may grow)."""

    preset: str = "small"
    steps: int = 3000
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 100
    decay_steps: int = 0
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    mean_recurrence: int = 12
    backprop_depth: int = 4
    seed: int = 0
    shift_px: int = 8
    dataset_key: str = ""  # empty: "<suite>_no_noops" of the episodes' LIBERO suite, as the authors' datasets are named

    def lr_at(self, step: int) -> float:
        """Linear warm-up from 0.1 lr over `warmup_steps`, constant, then over the last `decay_steps` a linear
        fall to 0.1 lr."""
        if step < self.warmup_steps:
            return self.lr * (0.1 + 0.9 * step / self.warmup_steps)
        if step >= self.decay_start:
            return self.lr * (1.0 - 0.9 * (step - self.decay_start) / self.decay_steps)
        return self.lr

    @property
    def decay_start(self) -> int:
        return self.steps - self.decay_steps


class TrainingError(ValueError):
    """A run that cannot start or resume as asked."""


def pixel_values(images: np.ndarray) -> torch.Tensor:
    """Cached uint8 images (B, cameras, 224, 224, 3) -> pixel_values (B, 6 cameras, 224, 224).

    The same float32 operations as `rdvla.runtime.preprocess.to_pixel_values` (x / 255, then (x - mean) / std),
    so the same bits."""
    cfg = DEFAULT_CONFIG
    mean = torch.tensor(cfg.dino_mean + cfg.siglip_mean, dtype=torch.float32).reshape(6, 1, 1)
    std = torch.tensor(cfg.dino_std + cfg.siglip_std, dtype=torch.float32).reshape(6, 1, 1)
    x = torch.from_numpy(np.array(images, np.uint8)).permute(0, 1, 4, 2, 3).float() / 255.0
    x = (torch.cat([x, x], dim=2) - mean) / std
    return x.flatten(1, 2)


def shifted(images: np.ndarray, shift_px: int, generator: torch.Generator) -> np.ndarray:
    """Each (sample, camera) image of (B, cameras, H, W, 3) moved by a random offset in [-shift_px, shift_px] on
    both axes, the border pixels repeated into the space it leaves."""
    if shift_px == 0:
        return images
    b, c, h, w, _ = images.shape
    offsets = torch.randint(0, 2 * shift_px + 1, (b, c, 2), generator=generator).numpy()
    padded = np.pad(images, ((0, 0), (0, 0), (shift_px, shift_px), (shift_px, shift_px), (0, 0)), mode="edge")
    out = np.empty_like(images)
    for i in range(b):
        for j in range(c):
            y, x = offsets[i, j]
            out[i, j] = padded[i, j, y:y + h, x:x + w]
    return out


@lru_cache(maxsize=2)
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_rows(seed: int, step: int, batch_size: int, n: int) -> np.ndarray:
    """The samples of `step`: consecutive slices of one seeded permutation per epoch, without state."""
    positions = range(step * batch_size, (step + 1) * batch_size)
    return np.asarray([_permutation(seed, p // n, n)[p % n] for p in positions], np.int64)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of one step's depth draw and initial latent."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def build_model(settings: TrainSettings, vocab_size: int) -> tuple[RDVLA, dict[str, Any]]:
    """The preset's model with the head's recurrence settings, initialised for training; and its config.json."""
    config, head_cfg = preset_config(settings.preset, vocab_size=64 * math.ceil(vocab_size / 64))
    head_cfg = replace(head_cfg, mean_recurrence=settings.mean_recurrence, backprop_depth=settings.backprop_depth)
    torch.manual_seed(settings.seed)  # the constructors' own initialisation of the VLM
    model = RDVLA(vlm_config_from_json(config), head_cfg)
    generator = torch.Generator().manual_seed(settings.seed)
    model.action_head.reset_parameters(generator)
    with torch.no_grad():
        model.vlm.action_queries.weight.zero_()
        for tower in (model.vlm.vision_backbone.featurizer, model.vlm.vision_backbone.fused_featurizer):
            # timm's initialisation; left at zero every patch would look the same wherever it sits.
            torch.nn.init.trunc_normal_(tower.pos_embed, std=0.02, generator=generator)
    model.vlm.language_model.model.embed_tokens.weight.requires_grad_(False)
    # PyTorch's fused attention: the same math as the reference's eager attention (which exports the same way
    # under every exporter) without materialising (B, heads, S, S) scores, several times faster on a CPU.
    model.vlm.language_model.config._attn_implementation = "sdpa"
    return model, config


def loss_of_batch(model: RDVLA, pixels: torch.Tensor, prompts: Sequence[torch.Tensor], instruction_index: np.ndarray,
                  proprio: torch.Tensor, targets: torch.Tensor, iterations: int, generator: torch.Generator) -> torch.Tensor:
    """L1 of the final decode after `iterations` (TBPTT over the head's backprop_depth) against the targets.

    Samples must be sorted by instruction: the VLM runs once per instruction (prompts differ in length)."""
    head = model.action_head.model
    indices = head.cfg.vlm_indices
    groups = []
    for k in np.unique(instruction_index):
        rows = np.flatnonzero(instruction_index == k)
        ids = prompts[k].expand(len(rows), -1)
        groups.append(model.vlm.hidden_states(pixels[rows], ids, indices))
    hidden = {j: tuple(torch.cat([g[j][part] for g in groups]) for part in (0, 1)) for j in indices}
    ctx = head.context(hidden, model.proprio_projector(proprio))  # type: ignore[arg-type]
    latent = head.initial_latent(pixels.shape[0], generator)
    predicted = truncated_bptt_forward(head, ctx, latent, iterations, head.cfg.backprop_depth)
    return (predicted - targets).abs().mean()


@dataclass
class Run:
    """A training run's data, model and optimiser, at `step` (steps done)."""

    out: Path
    settings: TrainSettings
    samples: TrainingSamples
    frames: np.ndarray  # memory-mapped uint8 (S, cameras, 224, 224, 3)
    prompts: list[torch.Tensor]
    model: RDVLA
    config: dict[str, Any]
    optimizer: torch.optim.Optimizer
    data_digest: str
    step: int = 0
    curve: list[dict[str, float]] | None = None

    def train_step(self) -> dict[str, float]:
        """One optimiser step; returns its learning-curve row."""
        s = self.settings
        start = time.perf_counter()
        rows = batch_rows(s.seed, self.step, s.batch_size, len(self.samples.targets))
        rows = rows[np.argsort(self.samples.instruction_index[rows], kind="stable")]
        rows_sorted = np.sort(rows)  # memory-mapped reads in file order, then back to the batch's order
        frames = self.frames[rows_sorted][np.searchsorted(rows_sorted, rows)]
        generator = step_generator(s.seed, self.step)
        iterations = sample_iterations(s.mean_recurrence, generator)
        frames = shifted(frames, s.shift_px, generator)
        lr = s.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        loss = loss_of_batch(self.model, pixel_values(frames), self.prompts, self.samples.instruction_index[rows],
                             torch.from_numpy(self.samples.proprio[rows]), torch.from_numpy(self.samples.targets[rows]),
                             iterations, generator)
        if not torch.isfinite(loss):
            raise TrainingError(f"step {self.step}: the loss is {loss.item()}; lower --lr and start again")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], s.grad_clip)
        self.optimizer.step()
        self.step += 1
        row = {"step": self.step, "loss": loss.item(), "lr": lr, "iterations": iterations,
               "seconds": time.perf_counter() - start}
        assert self.curve is not None
        self.curve.append(row)
        return row

    def save(self) -> None:
        """The released-layout checkpoint, the learning curve, then the resumable state (each replaced whole)."""
        write_checkpoint(self.model, self.out / CHECKPOINT_DIR, self.step, self.config, self.samples.statistics,
                         self.out / TOKENIZER_DIR)
        with atomic_write(self.out / CURVE_FILE) as path:
            with open(path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=CURVE_FIELDS)
                writer.writeheader()
                writer.writerows(self.curve or [])
        state = {"settings": asdict(self.settings), "step": self.step, "data": self.data_digest, "curve": self.curve,
                 "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}
        with atomic_write(self.out / STATE_FILE) as path:
            torch.save(state, path)
        log.info("saved step %d to %s", self.step, self.out)


def write_checkpoint(model: RDVLA, destination: Path, step: int, config: dict[str, Any], statistics: dict[str, Any],
                     tokenizer_dir: Path) -> None:
    """The model in the released layout with its statistics, tokenizer and processor config; complete or absent."""
    with scratch_directory(destination) as work:
        save_checkpoint(model, work, step, config, statistics)
        for path in sorted(tokenizer_dir.iterdir()):
            shutil.copy2(path, work / path.name)
        (work / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(), indent=2) + "\n")
        publish_directory(work, destination)


def _episodes(data: Sequence[Path]) -> list[Episode]:
    roots = find_episodes(data)
    kept = [root for root in roots if succeeded(root)]
    if not kept:
        raise DemonstrationError(f"no successful episode under {', '.join(map(str, data))} "
                                 f"({len(roots)} episode.json found)")
    log.info("%d successful episodes of %d", len(kept), len(roots))
    episodes = [read_episode(root) for root in kept]
    if len({e.cameras for e in episodes}) != 1:
        raise DemonstrationError("the episodes record different cameras: " + ", ".join(sorted({"/".join(e.cameras) for e in episodes})))
    return episodes


def _frames(out: Path, episodes: Sequence[Episode], digest: str) -> np.ndarray:
    """The frame cache of `out`, written first when absent or made from other episodes."""
    index = out / FRAMES_INDEX
    cache = out / FRAMES_FILE
    if not (index.is_file() and json.loads(index.read_text()).get("data") == digest and cache.is_file()):
        log.info("preprocessing %d frames of %d episodes", sum(len(e) for e in episodes), len(episodes))
        with atomic_write(cache) as path:
            write_frame_cache(episodes, path)
        with atomic_write(index) as path:
            path.write_text(json.dumps({"data": digest}) + "\n")
    return np.load(cache, mmap_mode="r")


def open_run(out: Path, data: Sequence[Path], settings: TrainSettings, resume: bool) -> Run:
    """Read the demonstrations, cache their frames, build the model; with `resume`, continue `out`'s saved state."""
    out.mkdir(parents=True, exist_ok=True)
    episodes = _episodes(data)
    if not settings.dataset_key:
        suites = sorted({str(e.suite) for e in episodes})
        if len(suites) != 1 or suites == ["None"]:
            raise TrainingError(f"the episodes name LIBERO suites {suites}: give the statistics' key with --dataset-key")
        settings = replace(settings, dataset_key=f"{suites[0]}_no_noops")
    digest = fingerprint(episodes)
    samples = training_samples(episodes, settings.dataset_key)
    with atomic_write(out / STATISTICS_FILE) as path:
        path.write_text(json.dumps(samples.statistics, indent=2) + "\n")
    frames = _frames(out, episodes, digest)
    tokenizer_dir = out / TOKENIZER_DIR
    tokenizer_dir.mkdir(exist_ok=True)
    vocab = write_tokenizer_files(tokenizer_dir, vocab_size=TOKENIZER_VOCAB)
    tokenizer = PromptTokenizer(tokenizer_dir / "tokenizer.json")
    prompts = [torch.from_numpy(np.array(tokenizer(text))) for text in samples.instructions]
    model, config = build_model(settings, vocab)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=settings.lr, weight_decay=settings.weight_decay)
    run = Run(out, settings, samples, frames, prompts, model, config, optimizer, digest, curve=[])
    if resume:
        _restore(run)
    return run


def _restore(run: Run) -> None:
    state = torch.load(run.out / STATE_FILE, map_location="cpu", weights_only=True)
    saved = TrainSettings(**state["settings"])
    new = run.settings
    if replace(saved, steps=new.steps, decay_steps=new.decay_steps) != new:
        changed = [k for k, v in asdict(saved).items() if k not in ("steps", "decay_steps") and getattr(new, k) != v]
        raise TrainingError(f"{run.out} was trained with other settings ({', '.join(changed)}); resume with the same "
                            "ones, or train into a new --out")
    # Longer or with a decay: the steps already taken must have had the learning rates the new settings give them.
    if int(state["step"]) > min(saved.decay_start, new.decay_start):
        raise TrainingError(f"{run.out} is at step {state['step']}, past where its learning rate started to fall "
                            f"(step {min(saved.decay_start, new.decay_start)}); it cannot be extended")
    if state["data"] != run.data_digest:
        raise TrainingError(f"{run.out} was trained on other demonstrations; resume with the same --data, "
                            "or train into a new --out")
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.step = int(state["step"])
    run.curve = list(state["curve"])


def train(run: Run, save_every: int, on_step: Callable[[dict[str, float]], None] | None = None) -> None:
    """Train `run` up to its settings' steps, saving every `save_every` steps and at the end."""
    while run.step < run.settings.steps:
        row = run.train_step()
        if on_step is not None:
            on_step(row)
        if run.step % save_every == 0 or run.step == run.settings.steps:
            run.save()
