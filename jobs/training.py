"""The training loop: a JobSpec in, a trained model (and checkpoints) in a job directory out.

`run(spec, job_dir=..., callbacks=...)` builds the model, loss, optimizer, scheduler, data
loaders and (for fp16) a GradScaler from the spec, trains for `epochs` or `max_steps`
optimizer steps, evaluates on cadence and at the end, stops early when told to, and writes

    <job_dir>/checkpoints/step-NNNNNNNN.safetensors   every checkpoint_every_steps
    <job_dir>/model.safetensors                       the final weights, self-describing

A "step" is one optimizer step: `grad_accumulation_steps` batches, or fewer for the last
group of an epoch (so every batch is used and an epoch has ceil(batches / accumulation)
steps). Checkpoints fall only between steps, which is all resuming needs: each holds the
weights, optimizer, scheduler, scaler, the default generator's state (dropout) and the
train loader's `state_dict()` (shuffle order, position within the epoch, worker seeds).
Run again on the same directory, `run` continues from the newest checkpoint that loads and
finishes with the weights an uninterrupted run would have, bit for bit.

The final model's metadata holds the spec and the data bundle's preprocessing (and the
shapes the model was built for), so `load_trained_model` rebuilds it and applies exactly
the preprocessing training applied.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import engine
from engine import nn
from engine.amp import GradScaler, autocast
from engine.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from engine.nn.utils import clip_grad_norm_
from engine.optim import lr_scheduler
from engine.utils.data import DataLoader
from jobs import datasets, models
from jobs.callbacks import Callbacks
from jobs.errors import SpecError
from jobs.spec import JobSpec, TrainingSpec, constructor_parameters, load_spec

__all__ = [
    "RunResult",
    "TrainedModel",
    "TrainingError",
    "checkpoint_path",
    "load_trained_model",
    "resolve_device",
    "run",
]

CHECKPOINT_DIR = "checkpoints"
MODEL_FILE = "model.safetensors"
_CHECKPOINT_NAME = re.compile(r"^step-(\d{8})\.safetensors$")
_LOW_PRECISION = {"fp16": engine.float16, "bf16": engine.bfloat16}
# scheduler arguments that mean "how long the run is", filled in when the spec leaves them out
_HORIZON_ARGS = ("total_steps", "T_max")


class TrainingError(RuntimeError):
    """A run that cannot go on: a non-finite loss (naming the step), a job directory that
    holds another spec's checkpoints, a metric that the evaluation does not produce."""


@dataclass(frozen=True)
class RunResult:
    """What a run ended with. `model_path` is None when the run was cancelled (its last
    checkpoint holds the progress instead)."""

    metrics: dict[str, float]
    model_path: Path | None
    steps: int
    resumed_from_step: int | None
    cancelled: bool = False


def resolve_device(requested: str) -> engine.device:
    """ "auto" means CUDA when the engine sees a GPU, else CPU."""
    if requested == "auto":
        requested = "cuda" if engine.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not engine.cuda.is_available():
        raise TrainingError(
            "device 'cuda' was asked for but no CUDA GPU is visible to CuPy "
            "(install descent[gpu] on a GPU machine, or use device 'cpu' or 'auto')"
        )
    return engine.device(requested)


def checkpoint_path(job_dir: Path, step: int) -> Path:
    return job_dir / CHECKPOINT_DIR / f"step-{step:08d}.safetensors"


def _checkpoints(job_dir: Path) -> list[tuple[int, Path]]:
    """The job's checkpoint files as (step, path), oldest first."""
    folder = job_dir / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(m, p) for p in folder.iterdir() if (m := _CHECKPOINT_NAME.match(p.name))]
    return sorted((int(m.group(1)), p) for m, p in found)


def _spec_document(spec: JobSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json")


def _build_scheduler(
    spec: JobSpec, optimizer: engine.optim.Optimizer, total_steps: int, total_epochs: int
) -> lr_scheduler.LRScheduler | None:
    if spec.scheduler is None:
        return None
    cls = getattr(lr_scheduler, spec.scheduler.type)
    kwargs = dict(spec.scheduler.kwargs)
    horizon = total_steps if spec.scheduler.interval == "step" else total_epochs
    params = constructor_parameters(cls)
    # OneCycleLR may be sized by epochs * steps_per_epoch instead of total_steps
    if "epochs" not in kwargs:
        for name in _HORIZON_ARGS:
            if name in params and name not in kwargs:
                kwargs[name] = horizon
    try:
        return cls(optimizer, **kwargs)
    except (TypeError, ValueError) as e:  # arguments that contradict each other or the run
        raise SpecError("scheduler", f"{spec.scheduler.type}: {e}") from None


def _horizon(training: TrainingSpec, batches_per_epoch: int) -> tuple[int, int, int]:
    """(optimizer steps an epoch, steps in all, epochs in all) of a run."""
    per_epoch = -(-batches_per_epoch // (training.grad_accumulation_steps or 1))
    if training.max_steps is not None:
        return per_epoch, training.max_steps, -(-training.max_steps // per_epoch)
    assert training.epochs is not None  # TrainingSpec requires one of the two
    return per_epoch, training.epochs * per_epoch, training.epochs


def check_schedule(spec: JobSpec, bundle: datasets.DataBundle) -> None:
    """The run's scheduler built for its length on a stand-in optimizer, so that arguments
    contradicting the run (warmup_steps past its last step) are a SpecError when the job
    is submitted, not a failure on the worker."""
    if spec.scheduler is None:
        return
    batches = len(DataLoader(bundle.train, batch_size=spec.data.batch_size))
    _, total_steps, total_epochs = _horizon(spec.training, batches)
    stand_in = [engine.zeros(1, requires_grad=True)]
    optimizer = getattr(engine.optim, spec.optimizer.type)(stand_in, **spec.optimizer.kwargs)
    _build_scheduler(spec, optimizer, total_steps, total_epochs)


@dataclass
class _Progress:
    """The loop's own state beyond the engine objects' state dicts; saved in checkpoints."""

    step: int = 0
    epoch: int = 0
    best_value: float | None = None  # of the watched metric, for early stopping
    evals_without_improvement: int = 0
    # the watched metric's latest value when each kept checkpoint was written
    checkpoint_scores: dict[str, float | None] = field(default_factory=dict)
    last_value: float | None = None

    def as_metadata(self) -> dict[str, Any]:
        return {
            "best_value": self.best_value,
            "evals_without_improvement": self.evals_without_improvement,
            "checkpoint_scores": dict(self.checkpoint_scores),
            "last_value": self.last_value,
        }


class _Run:
    """One training run: the objects built from the spec and the loop over them."""

    def __init__(
        self, spec: JobSpec, job_dir: Path, callbacks: Callbacks, device: engine.device
    ) -> None:
        self.spec, self.job_dir, self.callbacks, self.device = spec, job_dir, callbacks, device
        training = spec.training
        self.training = training
        self.spec_doc = _spec_document(spec)
        # the seed fixes the model's initial weights and every dropout mask after them
        engine.manual_seed(training.seed)
        self.bundle = datasets.load_data(spec.data, seed=training.seed)
        bundle = self.bundle
        sizes = bundle.model_sizes()
        # checked on the meta device (no storage, no random draws) before it is built: a
        # shape mismatch names its layer, and a model or activations too big for the
        # limits fail here instead of exhausting the worker's memory
        models.check_model(
            spec.model,
            **sizes,
            batch_size=spec.data.batch_size,
            precision=training.precision,
            memory_limit_mb=spec.resources.memory_limit_mb,
        )
        self.model = models.build_model(spec.model, **sizes).to(device)
        if training.gradient_checkpointing:
            if not hasattr(self.model, "gradient_checkpointing"):
                raise TrainingError(
                    "training.gradient_checkpointing: only the resnet and transformer_lm "
                    "architectures recompute their blocks in backward"
                )
            self.model.gradient_checkpointing = True
        self.loss_fn = getattr(nn, spec.loss.type)(**spec.loss.kwargs)
        self.optimizer = getattr(engine.optim, spec.optimizer.type)(
            self.model.parameters(), **spec.optimizer.kwargs
        )
        self.train_loader = DataLoader(
            bundle.train,
            batch_size=spec.data.batch_size,
            shuffle=spec.data.shuffle,
            num_workers=spec.data.workers,
            # its own generator, so the shuffle order is saved and restored on its own
            generator=engine.Generator().manual_seed(training.seed),
        )
        self.val_loader = (
            None
            if bundle.validation is None
            else DataLoader(
                bundle.validation,
                batch_size=spec.data.batch_size,
                # a loader draws a seed per epoch; a private generator keeps evaluation
                # from moving the default one that dropout draws from
                generator=engine.Generator().manual_seed(training.seed),
            )
        )
        self.accumulation = training.grad_accumulation_steps or 1
        self.steps_per_epoch, self.total_steps, total_epochs = _horizon(
            training, len(self.train_loader)
        )
        self.scheduler = _build_scheduler(spec, self.optimizer, self.total_steps, total_epochs)
        self.autocast_dtype = _LOW_PRECISION.get(training.precision)
        self.scaler = GradScaler(device=device.type, enabled=training.precision == "fp16")
        stopping = training.early_stopping
        self.watch_metric = stopping.metric if stopping is not None else "val_loss"
        self.watch_mode = stopping.mode if stopping is not None else "min"
        self.progress = _Progress()
        self.metrics: dict[str, float] = {}

    # ---- resuming ---------------------------------------------------------------------
    def restore(self) -> int | None:
        """Load the newest checkpoint that loads; the step it was written at, or None."""
        for step, path in reversed(_checkpoints(self.job_dir)):
            try:
                ckpt = load_checkpoint(path, device=self.device)
            except CheckpointError as e:
                # renamed so that pruning and later resumes no longer count it
                path.rename(path.with_name(path.name + ".corrupt"))
                self.callbacks.on_event(
                    "warning", f"skipped checkpoint {path.name} (renamed to *.corrupt): {e}"
                )
                continue
            if ckpt.metadata.get("spec") != self.spec_doc:
                raise TrainingError(
                    f"{self.job_dir} holds checkpoints of a different spec than this one; "
                    "train with --no-resume to start over there, or use another data dir"
                )
            self.model.load_state_dict(ckpt.model_state_dict)
            self.optimizer.load_state_dict(ckpt.optimizer_state_dict)
            if self.scheduler is not None:
                self.scheduler.load_state_dict(ckpt.scheduler_state_dict)
            if ckpt.scaler_state_dict is not None:
                self.scaler.load_state_dict(ckpt.scaler_state_dict)
            engine.set_rng_state(ckpt.rng_state)
            self.train_loader.load_state_dict(ckpt.metadata["loader"])
            saved = ckpt.metadata["progress"]
            self.progress = _Progress(
                step=step,
                epoch=int(ckpt.epoch or 0),
                best_value=saved["best_value"],
                evals_without_improvement=saved["evals_without_improvement"],
                checkpoint_scores=dict(saved["checkpoint_scores"]),
                last_value=saved["last_value"],
            )
            self.metrics = dict(ckpt.metadata.get("metrics", {}))
            self.callbacks.on_resume(step, path)
            self.callbacks.on_event("info", f"resumed from step {step} (checkpoint {path.name})")
            return step
        return None

    def clear_checkpoints(self) -> None:
        for _, path in _checkpoints(self.job_dir):
            path.unlink()

    # ---- the loop ---------------------------------------------------------------------
    def finished(self) -> bool:
        t = self.training
        if t.max_steps is not None:
            return self.progress.step >= t.max_steps
        return self.progress.epoch >= t.epochs

    def train(self) -> bool:
        """Train to the end, an early stop or a cancel; True when cancelled."""
        self.model.train()
        n_batches = len(self.train_loader)
        while not self.finished():
            batches = iter(self.train_loader)
            # after a resume the loader skips what the epoch already used
            used = self.train_loader.state_dict()["batches_yielded"]
            group: list[float] = []
            samples = 0
            started = time.perf_counter()
            for x, y in batches:
                # groups start at multiples of the accumulation count within the epoch
                group_size = min(self.accumulation, n_batches - (used - len(group)))
                group.append(self.forward_backward(x, y, group_size))
                samples += x.shape[0]
                used += 1
                if len(group) < group_size:
                    continue
                stop = self.optimizer_step(group, samples, started)
                group, samples = [], 0
                started = time.perf_counter()
                if stop == "cancel":
                    return True
                if stop == "early_stop" or self.finished():
                    return False
            self.progress.epoch += 1
            if self.scheduler is not None and self.spec.scheduler.interval == "epoch":
                self.step_scheduler()
        return False

    def forward_backward(self, x: engine.Tensor, y: engine.Tensor, group_size: int) -> float:
        x, y = x.to(self.device), y.to(self.device)
        with autocast(
            self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None
        ):
            loss = self.compute_loss(self.model(x), y)
        value = loss.item()  # the one host sync a batch: the value is reported anyway
        if not math.isfinite(value) and not self.scaler.is_enabled():
            raise TrainingError(
                f"step {self.progress.step + 1}: the loss is {value} (not finite); lower the "
                "learning rate, set training.grad_clip_norm, or check the data"
            )
        self.scaler.scale(loss / group_size).backward()
        return value

    def compute_loss(self, output: engine.Tensor, target: engine.Tensor) -> engine.Tensor:
        if self.bundle.task == "language_model":  # (N, T, V) logits against (N, T) tokens
            return self.loss_fn(output.reshape(-1, output.shape[-1]), target.reshape(-1))
        if self.bundle.task == "regression" and output.ndim == target.ndim + 1:
            output = output.squeeze(-1)  # one output unit against one target per sample
        return self.loss_fn(output, target)

    def optimizer_step(self, losses: list[float], samples: int, started: float) -> str | None:
        """Clip, step, schedule, then report, evaluate, checkpoint and check for cancel."""
        t, progress = self.training, self.progress
        progress.step += 1
        if t.grad_clip_norm is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not scaled ones
            clip_grad_norm_(self.model.parameters(), t.grad_clip_norm)
        lr = self.optimizer.param_groups[0]["lr"]
        if self.scaler.is_enabled():
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.scaler.get_scale() < scale:
                self.callbacks.on_event(
                    "warning",
                    f"step {progress.step}: inf/NaN gradients under fp16; the grad scaler "
                    f"skipped the step and lowered the scale to {self.scaler.get_scale():g}",
                )
        else:
            self.optimizer.step()
        self.optimizer.zero_grad()
        if self.scheduler is not None and self.spec.scheduler.interval == "step":
            self.step_scheduler()
        loss = sum(losses) / len(losses)
        elapsed = time.perf_counter() - started
        self.callbacks.on_step(
            progress.step,
            {
                "loss": loss,
                "lr": lr,
                "epoch": progress.epoch + 1,
                "total_steps": self.total_steps,
                "samples": samples,
                "samples_per_s": samples / elapsed if elapsed > 0 else 0.0,
            },
        )
        self.metrics["train_loss"] = loss
        stop = None
        if t.eval_every_steps and progress.step % t.eval_every_steps == 0:
            stop = self.evaluate_and_watch()
        checkpoint_due = bool(t.checkpoint_every_steps) and (
            progress.step % t.checkpoint_every_steps == 0
        )
        if checkpoint_due:
            self.checkpoint()
        if stop is None and self.callbacks.should_cancel():
            if not checkpoint_due:  # a cancelled run leaves its progress in a checkpoint
                self.checkpoint()
            self.callbacks.on_event("info", f"cancelled at step {progress.step}")
            stop = "cancel"
        return stop

    def step_scheduler(self) -> None:
        # ReduceLROnPlateau steps on the validation metric, after each evaluation instead
        if not isinstance(self.scheduler, lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step()

    # ---- evaluation -------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Loss over the validation set (mean per target), plus accuracy or perplexity."""
        if self.val_loader is None:
            return {}
        self.model.eval()
        total, count, correct = 0.0, 0, 0
        with (
            engine.no_grad(),
            autocast(
                self.device.type,
                dtype=self.autocast_dtype,
                enabled=self.autocast_dtype is not None,
            ),
        ):
            for inputs, targets in self.val_loader:
                y = targets.to(self.device)
                output = self.model(inputs.to(self.device))
                n = y.numel()
                total += self.compute_loss(output, y).item() * n
                count += n
                if self.bundle.task == "classification":
                    correct += int((output.argmax(-1) == y).sum().item())
        self.model.train()
        val_loss = total / count
        metrics = {"val_loss": val_loss}
        if self.bundle.task == "classification":
            metrics["val_accuracy"] = correct / count
        elif self.bundle.task == "language_model":
            metrics["val_perplexity"] = math.exp(min(val_loss, 700.0))  # exp overflows past 709
        return metrics

    def evaluate_and_watch(self) -> str | None:
        """Evaluate, report, feed ReduceLROnPlateau and early stopping; "early_stop" or None."""
        metrics = self.evaluate()
        if not metrics:
            return None
        progress = self.progress
        self.metrics.update(metrics)
        self.callbacks.on_eval(progress.step, metrics)
        if isinstance(self.scheduler, lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(metrics["val_loss"])
        value = self.watched(metrics)
        progress.last_value = value
        stopping = self.training.early_stopping
        delta = stopping.min_delta if stopping is not None else 0.0
        if progress.best_value is None or self.better(value, progress.best_value, delta):
            progress.best_value = value
            progress.evals_without_improvement = 0
            return None
        progress.evals_without_improvement += 1
        if stopping is not None and progress.evals_without_improvement >= stopping.patience:
            self.callbacks.on_event(
                "info",
                f"early stop at step {progress.step}: {self.watch_metric} has not improved "
                f"for {stopping.patience} evaluations (best {progress.best_value:.6g})",
            )
            return "early_stop"
        return None

    def watched(self, metrics: dict[str, float]) -> float:
        name = self.watch_metric
        for key in (name, f"val_{name}"):  # "accuracy" and "val_accuracy" both name it
            if key in metrics:
                return metrics[key]
        raise TrainingError(
            f"training.early_stopping.metric {name!r} is not an evaluation metric here; "
            f"the evaluation gives {sorted(metrics)}"
        )

    def better(self, value: float, best: float, delta: float) -> bool:
        return value < best - delta if self.watch_mode == "min" else value > best + delta

    # ---- checkpoints ------------------------------------------------------------------
    def checkpoint(self) -> None:
        progress = self.progress
        path = checkpoint_path(self.job_dir, progress.step)
        path.parent.mkdir(parents=True, exist_ok=True)
        progress.checkpoint_scores[str(progress.step)] = progress.last_value
        self.prune(keep_also=progress.step)
        save_checkpoint(
            Checkpoint(
                model_state_dict=self.model.state_dict(),
                epoch=progress.epoch,
                step=progress.step,
                optimizer_state_dict=self.optimizer.state_dict(),
                scheduler_state_dict=None
                if self.scheduler is None
                else self.scheduler.state_dict(),
                scaler_state_dict=self.scaler.state_dict() if self.scaler.is_enabled() else None,
                rng_state=engine.get_rng_state(),
                loss=self.metrics.get("train_loss"),
                metadata={
                    "spec": self.spec_doc,
                    "loader": self.train_loader.state_dict(),
                    "progress": progress.as_metadata(),
                    "metrics": dict(self.metrics),
                },
            ),
            path,
        )
        self.callbacks.on_checkpoint(progress.step, path)

    def prune(self, keep_also: int) -> None:
        """Keep the newest `keep_checkpoints` (counting the one being written) and the one
        with the best watched metric; forget the scores of the rest."""
        keep_n = self.training.keep_checkpoints
        scores = self.progress.checkpoint_scores
        steps = sorted({step for step, _ in _checkpoints(self.job_dir)} | {keep_also})
        keep = set(steps) if not keep_n else set(steps[-keep_n:])
        scored = [(v, s) for s in steps if (v := scores.get(str(s))) is not None]
        if scored:
            pick = min if self.watch_mode == "min" else max
            keep.add(pick(scored)[1])
        for step, path in _checkpoints(self.job_dir):
            if step not in keep:
                path.unlink()
        for key in [k for k in scores if int(k) not in keep]:
            del scores[key]

    def save_model(self) -> Path:
        bundle = self.bundle
        path = self.job_dir / MODEL_FILE
        save_checkpoint(
            Checkpoint(
                model_state_dict=self.model.state_dict(),
                epoch=self.progress.epoch,
                step=self.progress.step,
                metadata={
                    "spec": self.spec_doc,
                    "preprocessing": bundle.preprocessing,
                    "task": bundle.task,
                    "input_shape": list(bundle.input_shape),
                    "num_classes": bundle.num_classes,
                    "vocab_size": bundle.vocab_size,
                    "context": bundle.context,
                    "metrics": dict(self.metrics),
                },
            ),
            path,
        )
        return path


def run(
    spec: JobSpec,
    *,
    job_dir: Path,
    callbacks: Callbacks,
    device: str | None = None,
    resume: bool = True,
) -> RunResult:
    """Train `spec` in `job_dir` (see the module docstring). `device` overrides the spec's
    resources.device; `resume=False` deletes the directory's checkpoints and starts over."""
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    state = _Run(spec, job_dir, callbacks, resolve_device(device or spec.resources.device))
    resumed_from = None
    if resume:
        resumed_from = state.restore()
    else:
        state.clear_checkpoints()
    callbacks.on_event(
        "info",
        f"training {spec.name} on {state.device}: {state.total_steps} steps, "
        f"{state.steps_per_epoch} a epoch",
    )
    if state.train():
        return RunResult(
            metrics=dict(state.metrics),
            model_path=None,
            steps=state.progress.step,
            resumed_from_step=resumed_from,
            cancelled=True,
        )
    eval_every = spec.training.eval_every_steps
    if not (eval_every and state.progress.step % eval_every == 0):  # else just evaluated
        state.evaluate_and_watch()
    path = state.save_model()
    callbacks.on_event("info", f"model saved to {path}")
    return RunResult(
        metrics=dict(state.metrics),
        model_path=path,
        steps=state.progress.step,
        resumed_from_step=resumed_from,
    )


# ---- using a trained model -------------------------------------------------------------
@dataclass
class TrainedModel:
    """A model rebuilt from its `model.safetensors`, with what it needs to predict."""

    model: nn.Module
    spec: JobSpec
    task: str
    preprocessing: dict[str, Any]
    context: int | None

    def predict(self, raw: Any) -> np.ndarray:
        """Model outputs for `raw` after the training preprocessing: class indices for
        classification, values for regression, next-token logits for language models."""
        x = datasets.apply_preprocessing(self.preprocessing, raw)
        with engine.no_grad():
            output = self.model(x)
        if self.task == "classification":
            return output.argmax(-1).numpy()
        if self.task == "language_model":
            return output[..., -1, :].numpy()
        return output.numpy()

    def generate(self, prompt: str, length: int, *, seed: int = 0) -> str:
        """`length` new tokens after `prompt`, sampled from the model's distribution, as text."""
        tokens = datasets.apply_preprocessing(self.preprocessing, prompt).reshape(1, -1)
        generator = engine.Generator().manual_seed(seed)
        new: list[int] = []
        with engine.no_grad():
            for _ in range(length):
                window = tokens if self.context is None else tokens[:, -self.context :]
                probs = self.model(window)[0, -1].softmax(-1).numpy().astype(np.float64)
                u = float(engine.rand((), generator=generator).item())
                token = int(min(np.searchsorted(np.cumsum(probs), u * probs.sum()), len(probs) - 1))
                new.append(token)
                tokens = engine.cat([tokens, engine.tensor([[token]])], 1)
        return datasets.decode_tokens(self.preprocessing, new)


def load_trained_model(path: Path) -> TrainedModel:
    """Rebuild the model saved at `path` (a model.safetensors or the job dir holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    ckpt = load_checkpoint(path)
    meta = ckpt.metadata
    if "spec" not in meta or "preprocessing" not in meta:
        raise CheckpointError(f"{path} is a checkpoint, not a trained model (no spec in it)")
    spec = load_spec(meta["spec"])
    model = models.build_model(
        spec.model,
        input_shape=tuple(meta["input_shape"]),
        num_classes=meta["num_classes"],
        vocab_size=meta["vocab_size"],
        context=meta["context"],
    )
    model.load_state_dict(ckpt.model_state_dict)
    model.eval()
    return TrainedModel(model, spec, meta["task"], meta["preprocessing"], meta["context"])
