"""Shared machinery of every learned policy: config fields, the training loop, checkpoints.

``LearnedPolicy.fit`` is the one training loop (CleanRL-style, top to bottom): AdamW with a
cosine schedule and warm-up, an EMA of the weights (diffusers ``EMAModel``, power 0.75 as in
Diffusion Policy), a tqdm bar, periodic evaluation of the EMA weights on the validation envs
with the best checkpoint kept, and a resumable training state written atomically at every
evaluation. Subclasses say how to build their network and what their loss is.
"""

from __future__ import annotations

import json
import time
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from safetensors.torch import load as tensors_from_bytes
from safetensors.torch import save as tensors_to_bytes
from torch import nn
from tqdm import tqdm

from cfbench.files import CheckpointError, atomic_write_bytes, atomic_write_text
from policies.base import WEIGHTS_FILE, Policy, PolicyConfig

TRAIN_STATE = "train_state.safetensors"
#: the learning curve holds the mean loss of every this many steps (and of the last few)
LOSS_EVERY = 50
TRAIN_META = "train_state.json"
BEST = "best"


@dataclass
class LearnedConfig(PolicyConfig):
    """Training settings shared by every learned policy (CPU-sized defaults)."""

    #: optimiser steps of the main training phase (CPU budget: a run in minutes on 2 cores)
    train_steps: int = 5000
    #: windows per optimiser step
    batch_size: int = 128
    #: peak AdamW learning rate (cosine decay after the warm-up)
    lr: float = 1e-3
    #: AdamW weight decay (Diffusion Policy's value)
    weight_decay: float = 1e-6
    #: optimiser steps of linear learning-rate warm-up
    warmup_steps: int = 200
    #: power of the EMA warm-up, decay = 1 - (1 + step)^-power (Diffusion Policy: 0.75)
    ema_power: float = 0.75
    #: steps between validations of the EMA weights (checkpoint selection on the validation seeds)
    eval_every: int = 1000
    #: seeds the weights, the batches and the rollout noise
    seed: int = 0
    #: torch device, e.g. "cpu" or "cuda"
    device: str = "cpu"
    #: observation state size; filled in by ``fit`` from the dataset, so ``load`` can rebuild the network
    obs_dim: int = 0
    #: action (pose) size; filled in by ``fit``
    action_dim: int = 0
    #: pixel views the encoder reads, e.g. ("global", "local"); filled in by ``fit`` (empty in state mode)
    views: tuple[str, ...] = ()
    #: share of the training windows kept, a random subset drawn with ``seed`` (1 = all): trains on
    #: less data at the same rate, e.g. 20 Hz demos cut to a 5 Hz dataset's window count (0.25)
    window_fraction: float = 1.0

    #: named sets of overrides: "cpu" (the defaults) and a larger "gpu" profile
    profiles: ClassVar[dict[str, dict[str, Any]]] = {"cpu": {}}
    #: fields ``fit`` fills in from the dataset: never set by hand
    FITTED: ClassVar[tuple[str, ...]] = ("obs_dim", "action_dim", "views")
    LIMITS: ClassVar[dict[str, str]] = {
        "train_steps": "positive", "batch_size": "positive", "lr": "positive", "weight_decay": "non-negative",
        "warmup_steps": "non-negative", "ema_power": "positive", "eval_every": "positive", "seed": "non-negative",
        "obs_dim": "non-negative", "action_dim": "non-negative", "window_fraction": "positive"}
    NEUTRAL: ClassVar[dict[str, Any]] = {"window_fraction": 1.0}

    def __post_init__(self):
        super().__post_init__()
        if self.window_fraction > 1:
            raise ValueError(f"{self.name}: window_fraction={self.window_fraction!r} must be in (0, 1]")


#: evaluates a policy (its current weights) and returns a score to maximise
Validator = Callable[[Policy], float]
#: a training loss on one batch, all randomness from the generator
Loss = Callable[[dict[str, torch.Tensor], torch.Generator], torch.Tensor]


class LearnedPolicy(Policy):
    config_class = LearnedConfig

    def __init__(self, config: LearnedConfig | None = None):
        super().__init__(config)
        self.model: nn.Module | None = None
        self._best: dict[str, torch.Tensor] | None = None
        if self.config.obs_dim:  # a loaded checkpoint: rebuild the network from the config
            self.model = self.build_model().to(self.device).eval()

    @property
    def device(self) -> torch.device:
        """The config's torch device, if this machine has it (else a ValueError saying so)."""
        try:
            device = torch.device(self.config.device)
        except RuntimeError:
            raise ValueError(f"device={self.config.device!r} is not a torch device; use cpu, cuda or cuda:N") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.config.device!r} requested but CUDA is not available on this machine; "
                             "use --device cpu")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {self.config.device!r}: this machine has {torch.cuda.device_count()} CUDA "
                             "device(s)")
        return device

    # ------------------------------------------------------------------ hooks
    @abstractmethod
    def build_model(self) -> nn.Module:
        """The network for ``self.config`` (dims already filled in)."""

    @abstractmethod
    def prepare(self, dataset) -> dict[str, torch.Tensor]:
        """Training tensors from a demo dataset (first dim = samples); fills in the config's dims."""

    @abstractmethod
    def initialise(self, data: dict[str, torch.Tensor]) -> None:
        """Called once the network exists: fit its normalisers to the training tensors."""

    @abstractmethod
    def loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """Training loss on one batch; all randomness from ``generator``."""

    # ------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {} if self.model is None else self.model.state_dict()

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.model is None:
            raise ValueError(f"policy {self.name!r}: checkpoint config has no dataset dims; was it trained?")
        try:
            missing, unexpected = self.model.load_state_dict(tensors, strict=False)
        except RuntimeError as error:  # torch lists every mismatched tensor: name the first
            mismatch = next((line.strip() for line in str(error).splitlines() if "size mismatch" in line), str(error))
            raise ValueError(f"checkpoint weights do not fit the network its config describes ({mismatch[:200]}); "
                             "was config.json edited?") from None
        if missing or unexpected:
            raise ValueError(f"checkpoint does not match {self.name!r}: missing {missing}, unexpected {unexpected}")

    # --------------------------------------------------------------- training
    def fit(self, dataset, *, work_dir: str | Path | None = None, validate: Validator | None = None,
            progress: bool = True) -> dict[str, Any]:
        """Train on ``dataset``; resumes from ``work_dir`` if an interrupted run left its state there.

        With ``validate``, the EMA weights are scored every ``eval_every`` steps and the best
        ones are kept (ties go to the later checkpoint); without it, the final EMA weights.
        Policies whose ``pretraining_identity`` is not None also take ``pretraining_dir``.
        """
        data = self.setup(dataset)
        return self.optimise(data, self.config.train_steps, work_dir=work_dir, validate=validate, progress=progress)

    def setup(self, dataset) -> dict[str, torch.Tensor]:
        """The seeded start of training: the dataset's tensors on the device, a fresh network
        and its normalisers fitted to them."""
        torch.manual_seed(self.config.seed)
        data = self.training_windows(dataset)
        self.model = self.build_model().to(self.device)
        data = {k: v.to(self.device) for k, v in data.items()}
        self.initialise(data)
        return data

    def training_windows(self, dataset) -> dict[str, torch.Tensor]:
        """``prepare``'s tensors, cut to the config's ``window_fraction``."""
        return keep_share(self.prepare(dataset), self.config.window_fraction, self.config.seed)

    def optimise(self, data: dict[str, torch.Tensor], steps: int, *, work_dir: str | Path | None = None,
                 validate: Validator | None = None, progress: bool = True, phase: int = 0,
                 lr: float | None = None, loss: Loss | None = None) -> dict[str, Any]:
        """One training phase of ``steps`` on ``data`` (at ``lr``, default config.lr, minimising
        ``loss``, default ``self.loss``), from the network's current weights, training the
        parameters that require gradients (``fit`` is phase 0; DiSPo's fine-tuning rounds and
        VQ-BeT's transformer are later phases)."""
        config = self.config
        loss = loss or self.loss
        self._best = None  # best weights of this phase only, never of an earlier one
        n_samples = len(next(iter(data.values())))
        params = [p for p in self.model.parameters() if p.requires_grad]
        # one fused kernel for the whole update, and the EMA in multi-tensor ops: on these small
        # networks the per-tensor loops cost 1.1x a step (benchmarks/optimizer_speed.py)
        optimizer = torch.optim.AdamW(params, lr=lr or config.lr, weight_decay=config.weight_decay, fused=True)
        schedule = get_scheduler("cosine", optimizer, num_warmup_steps=config.warmup_steps,
                                 num_training_steps=steps)
        ema = EMAModel(params, power=config.ema_power, use_ema_warmup=True, foreach=True)
        generator = torch.Generator().manual_seed(config.seed + phase)
        history: dict[str, Any] = {"step": 0, "losses": [], "validation": [], "best_score": None, "best_step": None,
                                   "train_seconds": 0.0}
        work_dir = Path(work_dir) if work_dir is not None else None
        if work_dir is not None and (work_dir / TRAIN_META).exists():
            history = self._restore(work_dir, optimizer, schedule, ema, generator, phase)

        start_time = time.perf_counter() - history["train_seconds"]
        running, bar = [], tqdm(range(history["step"], steps), initial=history["step"], total=steps,
                                desc=f"train {self.name}" + (f" phase {phase}" if phase else ""),
                                disable=not progress, unit="step", leave=False)
        self.model.train()
        for step in bar:
            index = torch.randint(n_samples, (config.batch_size,), generator=generator).to(self.device)
            value = loss({k: v[index] for k, v in data.items()}, generator)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            schedule.step()
            ema.step(params)
            running.append(value.item())
            if (step + 1) % LOSS_EVERY == 0 or step + 1 == steps:
                history["losses"].append([step + 1, float(np.mean(running))])
                bar.set_postfix(loss=f"{np.mean(running):.4f}")
                running = []
            if (step + 1) % config.eval_every == 0 or step + 1 == steps:
                history["step"] = step + 1
                history["train_seconds"] = time.perf_counter() - start_time
                self._evaluate_checkpoint(ema, params, validate, history, work_dir)
                if work_dir is not None:
                    self._save_state(work_dir, optimizer, schedule, ema, generator, history, phase)
        bar.close()
        self._finish(ema, params, history, work_dir)
        history["train_seconds"] = time.perf_counter() - start_time
        return history

    def _evaluate_checkpoint(self, ema, params, validate, history, work_dir) -> None:
        ema.store(params)
        ema.copy_to(params)
        self.model.eval()
        score = validate(self) if validate is not None else None
        self.model.train()
        if score is not None:
            history["validation"].append([history["step"], score])
            if history["best_score"] is None or score >= history["best_score"]:
                history["best_score"], history["best_step"] = score, history["step"]
                self._best = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                if work_dir is not None:
                    self.save(work_dir / BEST)
        ema.restore(params)

    def _finish(self, ema, params, history, work_dir) -> None:
        """Keep the best validated EMA weights, or the final EMA weights without validation."""
        if history["best_step"] is not None and self._best is not None:
            self.model.load_state_dict(self._best)
        elif history["best_step"] is not None:  # resumed after the best checkpoint was written
            path = work_dir / BEST / WEIGHTS_FILE
            _read_saved(path, work_dir, lambda path: self.model.load_state_dict(tensors_from_bytes(path.read_bytes())))
        else:
            ema.copy_to(params)
        self.model.eval()

    # ----------------------------------------------------------- resumption
    def phase_identity(self, phase: int) -> dict[str, Any]:
        """The settings a training phase's saved state belongs to: resuming under other ones is
        refused. Subclasses may leave out fields that only later phases read."""
        return self.config.identity()

    def _save_state(self, work_dir: Path, optimizer, schedule, ema, generator, history, phase: int) -> None:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors.update({f"ema.{i}": p for i, p in enumerate(ema.shadow_params)})
        optim_state = optimizer.state_dict()
        for index, slots in optim_state["state"].items():
            for key, value in slots.items():
                tensors[f"optim.{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
        tensors["generator"] = generator.get_state()
        tensors["torch_rng"] = torch.get_rng_state()  # dropout draws from the global generator
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        meta = {"history": history, "param_groups": optim_state["param_groups"],
                "schedule": schedule.state_dict(), "ema_steps": ema.optimization_step,
                "config": self.phase_identity(phase)}
        atomic_write_bytes(work_dir / TRAIN_STATE, tensors_to_bytes(tensors))
        atomic_write_text(work_dir / TRAIN_META, json.dumps(meta, default=list))

    def _restore(self, work_dir: Path, optimizer, schedule, ema, generator, phase: int) -> dict:
        meta = _read_saved(work_dir / TRAIN_META, work_dir, lambda path: json.loads(path.read_text()))
        if meta["config"] != json.loads(json.dumps(self.phase_identity(phase), default=list)):
            raise ValueError(f"{work_dir} holds the training state of a different configuration")

        def restore(path: Path) -> dict:
            tensors = tensors_from_bytes(path.read_bytes())
            self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            saved = [tensors.get(f"ema.{i}") for i in range(len(ema.shadow_params))]
            if f"ema.{len(saved)}" in tensors or any(
                    s is None or s.shape != p.shape for s, p in zip(saved, ema.shadow_params)):
                raise ValueError("its parameters are not this model's (saved by another version of the code)")
            for i, shadow in enumerate(ema.shadow_params):
                shadow.copy_(tensors[f"ema.{i}"])
            ema.optimization_step = meta["ema_steps"]
            state: dict[int, dict] = {}
            for key, value in tensors.items():
                if key.startswith("optim."):
                    _, index, slot = key.split(".", 2)
                    state.setdefault(int(index), {})[slot] = value.to(self.device)
            optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
            schedule.load_state_dict(meta["schedule"])
            generator.set_state(tensors["generator"])
            torch.set_rng_state(tensors["torch_rng"])
            return meta["history"]

        return _read_saved(work_dir / TRAIN_STATE, work_dir, restore)


def _read_saved(path: Path, work_dir: Path, read: Callable[[Path], Any]) -> Any:
    """``read(path)`` of a saved training file; any failure (truncated, corrupt, not ours) names
    the file and the way out instead of a traceback from deep inside torch or safetensors."""
    try:
        return read(path)
    except Exception as error:  # noqa: BLE001 (safetensors, json and torch each raise their own)
        raise CheckpointError(f"{path} is missing, corrupt or incomplete ({type(error).__name__}: {error}); "
                              f"delete {work_dir} (or pass --retrain) to train it again") from None


def keep_share(data: dict[str, torch.Tensor], fraction: float, seed: int) -> dict[str, torch.Tensor]:
    """A seeded random ``fraction`` of the samples (at least one), in their original order."""
    if fraction >= 1:
        return data
    total = len(next(iter(data.values())))
    kept = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[: max(1, round(fraction * total))]
    kept = kept.sort().values
    return {key: value[kept] for key, value in data.items()}


def set_trainable(modules: list[nn.Module], flag: bool) -> None:
    """Which parts a training phase trains (``optimise`` takes the parameters that require gradients)."""
    for module in modules:
        module.requires_grad_(flag)


def phase_summary(name: str, history: dict, offset: int) -> dict:
    """One line of a record's ``training.phases``: a phase's steps, best checkpoint and time."""
    return {"name": name, "first_step": offset + 1, "steps": history["step"], "best_step": history["best_step"],
            "best_score": history["best_score"], "train_seconds": history["train_seconds"]}


def append_phase(history: dict, phase: dict, name: str) -> dict:
    """One history over all phases, steps counted on: the selected weights are the last phase's."""
    offset = history["step"]
    shifted = lambda pairs: [[offset + step, value] for step, value in pairs]  # noqa: E731
    best_step = None if phase["best_step"] is None else offset + phase["best_step"]
    return {**history, "step": offset + phase["step"], "losses": history["losses"] + shifted(phase["losses"]),
            "validation": history["validation"] + shifted(phase["validation"]), "best_step": best_step,
            "best_score": phase["best_score"], "train_seconds": history["train_seconds"] + phase["train_seconds"],
            "phases": history["phases"] + [phase_summary(name, phase, offset)]}
