"""The training loop (jobs.training): the examples learn, resuming is exact, callbacks fire
in order, a non-finite loss names its step.

Fast tests run tiny versions of examples/*.json; the slow tier runs them in full against
the issue's targets.
"""

from __future__ import annotations

import collections
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import engine
from engine.checkpoint import load_checkpoint
from jobs import datasets, training
from jobs.callbacks import Callbacks
from jobs.errors import SpecError
from jobs.spec import JobSpec, load_spec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CORPUS = Path(__file__).resolve().parents[1] / "jobs" / "data" / "pydocs.txt"


def example(name: str, **training_overrides: Any) -> dict[str, Any]:
    doc = json.loads((EXAMPLES / f"{name}.json").read_text())
    if training_overrides:
        doc["training"].pop("epochs", None)
        doc["training"].update(training_overrides)
    return doc


class Recorder(Callbacks):
    """Records every call; raises at `crash_at`, cancels after `cancel_at`."""

    def __init__(self, crash_at: int | None = None, cancel_at: int | None = None) -> None:
        self.calls: list[tuple[str, Any, Any]] = []
        self.crash_at, self.cancel_at = crash_at, cancel_at
        self.step = 0

    def on_step(self, step: int, metrics: dict[str, Any]) -> None:
        self.step = step
        self.calls.append(("step", step, metrics))
        if step == self.crash_at:
            raise KeyboardInterrupt  # what a killed process looks like to the loop

    def on_eval(self, step: int, metrics: dict[str, Any]) -> None:
        self.calls.append(("eval", step, metrics))

    def on_event(self, kind: str, message: str) -> None:
        self.calls.append(("event", kind, message))

    def on_checkpoint(self, step: int, path: Path) -> None:
        self.calls.append(("checkpoint", step, path))

    def should_cancel(self) -> bool:
        return self.step == self.cancel_at

    def of(self, kind: str) -> list[tuple[Any, Any]]:
        return [(a, b) for k, a, b in self.calls if k == kind]


def train(doc: dict[str, Any], job_dir: Path, **kwargs: Any) -> tuple[training.RunResult, Recorder]:
    recorder = kwargs.pop("callbacks", Recorder())
    result = training.run(
        load_spec(doc), job_dir=job_dir, callbacks=recorder, device="cpu", **kwargs
    )
    return result, recorder


def weights(path: Path) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in load_checkpoint(path).model_state_dict.items()}


# ---- the examples learn -------------------------------------------------------------------
def test_tiny_digits_mlp_learns(tmp_path: Path) -> None:
    result, rec = train(example("digits-mlp", max_steps=40, eval_every_steps=20), tmp_path)
    losses = [m["loss"] for _, m in rec.of("step")]
    assert result.steps == 40
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert result.metrics["val_accuracy"] > 0.85
    assert result.model_path == tmp_path / "model.safetensors"


def test_tiny_char_lm_learns(tmp_path: Path) -> None:
    doc = example("char-lm", max_steps=30, eval_every_steps=30, checkpoint_every_steps=None)
    doc["model"]["args"] = {"d_model": 32, "n_heads": 2, "n_layers": 1, "dropout": 0.0}
    doc["data"]["context"] = 32
    doc["scheduler"]["warmup_steps"] = 5
    result, rec = train(doc, tmp_path)
    first_loss = rec.of("step")[0][1]["loss"]
    assert result.metrics["val_loss"] < first_loss - 0.8
    assert result.metrics["val_perplexity"] == pytest.approx(math.exp(result.metrics["val_loss"]))


# ---- resuming -----------------------------------------------------------------------------
def resumable(workers: int = 2, **overrides: Any) -> dict[str, Any]:
    """Shuffle, dropout, two workers, a scheduler, gradient accumulation; 10 steps an epoch
    (1437 train samples, batches of 64, 2 a step), checkpoints every 8 steps."""
    doc = example(
        "digits-mlp",
        max_steps=30,
        eval_every_steps=6,
        checkpoint_every_steps=8,
        keep_checkpoints=2,
        grad_accumulation_steps=2,
        grad_clip_norm=1.0,
    )
    doc["data"]["workers"] = workers
    doc["scheduler"]["warmup_steps"] = 5
    doc["training"].update(overrides)
    return doc


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    result, _ = train(resumable(), tmp_path_factory.mktemp("uninterrupted"))
    assert result.resumed_from_step is None
    return weights(result.model_path)


@pytest.mark.parametrize(
    ("interrupt", "expect_from"),
    [({"crash_at": 13}, 8), ({"cancel_at": 13}, 13)],
    ids=["crash-mid-epoch", "cancel-mid-epoch"],
)
def test_resume_is_bit_identical(
    tmp_path: Path,
    uninterrupted: dict[str, np.ndarray],
    interrupt: dict[str, int],
    expect_from: int,
) -> None:
    try:
        first, _ = train(resumable(), tmp_path, callbacks=Recorder(**interrupt))
        assert first.cancelled and first.model_path is None
    except KeyboardInterrupt:
        pass
    result, rec = train(resumable(), tmp_path)
    assert result.resumed_from_step == expect_from
    assert rec.of("step")[0][0] == expect_from + 1
    resumed = weights(result.model_path)
    assert resumed.keys() == uninterrupted.keys()
    for key, value in uninterrupted.items():
        assert np.array_equal(resumed[key], value), key


def test_a_corrupt_newest_checkpoint_is_skipped(
    tmp_path: Path, uninterrupted: dict[str, np.ndarray]
) -> None:
    with pytest.raises(KeyboardInterrupt):
        train(resumable(), tmp_path, callbacks=Recorder(crash_at=20))
    newest = training.checkpoint_path(tmp_path, 16)
    newest.write_bytes(newest.read_bytes()[:100])
    result, rec = train(resumable(), tmp_path)
    assert result.resumed_from_step == 8
    assert any(k == "warning" and "step-00000016" in m for k, m in rec.of("event"))
    for key, value in weights(result.model_path).items():
        assert np.array_equal(value, uninterrupted[key]), key


def test_checkpoints_kept_are_the_newest_and_the_best(tmp_path: Path) -> None:
    result, rec = train(resumable(workers=0), tmp_path)
    written = [s for s, _ in rec.of("checkpoint")]
    assert written == [8, 16, 24]
    kept = sorted(int(p.stem.split("-")[1]) for p in (tmp_path / "checkpoints").iterdir())
    assert kept[-2:] == [16, 24] and len(kept) <= 3
    meta = load_checkpoint(result.model_path).metadata
    assert load_spec(meta["spec"]) == load_spec(resumable(workers=0))
    assert meta["preprocessing"]["task"] == "classification"


def test_no_resume_starts_over(tmp_path: Path) -> None:
    train(resumable(), tmp_path)
    result, _ = train(resumable(), tmp_path, resume=False)
    assert result.resumed_from_step is None and result.steps == 30


def test_another_specs_checkpoints_are_refused(tmp_path: Path) -> None:
    train(resumable(), tmp_path)
    with pytest.raises(training.TrainingError, match="different spec"):
        train(resumable(seed=1), tmp_path)


# ---- callbacks and errors -----------------------------------------------------------------
def test_callbacks_fire_in_order(tmp_path: Path) -> None:
    _, rec = train(resumable(workers=0, max_steps=16), tmp_path)
    sequence = [(k, a) for k, a, _ in rec.calls if k != "event"]
    steps = [a for k, a in sequence if k == "step"]
    assert steps == list(range(1, 17))
    # at step 12: step, then eval; at step 16: step, checkpoint, then the final eval
    i = sequence.index(("step", 12))
    assert sequence[i + 1] == ("eval", 12)
    j = sequence.index(("step", 16))
    assert sequence[j + 1 :] == [("checkpoint", 16), ("eval", 16)]
    assert rec.calls[0][0] == "event" and rec.calls[-1][0] == "event"  # start, model saved
    metrics = rec.of("step")[0][1]
    assert set(metrics) >= {"loss", "lr", "epoch", "total_steps", "samples_per_s"}
    assert metrics["lr"] == 0.0 and metrics["total_steps"] == 16  # warm-up starts at 0


@pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value encountered")
def test_non_finite_loss_names_the_step(tmp_path: Path) -> None:
    doc = example("digits-mlp", max_steps=10)
    doc["optimizer"] = {"type": "SGD", "lr": 1e38}
    doc["scheduler"] = None
    with pytest.raises(training.TrainingError, match=r"^step 2: the loss is (nan|inf)"):
        train(doc, tmp_path)


def test_a_schedule_that_contradicts_the_run_is_refused_before_it_runs(tmp_path: Path) -> None:
    doc = example("digits-mlp", max_steps=5)  # its WarmupCosineLR warms up for 20 steps
    spec = load_spec(doc)
    bundle = datasets.load_data(spec.data, seed=0)
    with pytest.raises(SpecError, match=r"at least warmup_steps \(20\), got 5") as info:
        training.check_schedule(spec, bundle)
    assert info.value.path == "scheduler"
    with pytest.raises(SpecError, match="warmup_steps"):
        train(doc, tmp_path)  # what the worker would have met
    # epochs: 23 steps an epoch at batch 64, so one epoch is past the warm-up
    doc = example("digits-mlp", epochs=1)
    training.check_schedule(load_spec(doc), bundle)


def test_a_model_over_the_limits_fails_before_it_is_built(tmp_path: Path) -> None:
    # 64 * 10**9 parameters, 256 GB of float32: refused on the meta device, not allocated
    doc = example("digits-mlp", max_steps=10)
    doc["model"] = {"architecture": "mlp", "args": {"hidden": [10**9]}}
    with pytest.raises(SpecError, match=r"parameters exceed the limit of 1,000,000,000") as info:
        train(doc, tmp_path)
    assert info.value.path == "model"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow is the point
def test_fp16_skipped_steps_are_reported(tmp_path: Path) -> None:
    # a scale of 2**100 overflows float16 gradients, so the scaler skips and backs off
    doc = example("digits-mlp", max_steps=3, precision="fp16")
    doc["scheduler"] = None
    spec: JobSpec = load_spec(doc)
    rec = Recorder()
    original = engine.amp.GradScaler.__init__

    def huge_scale(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **{**kwargs, "init_scale": 2.0**100})

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine.amp.GradScaler, "__init__", huge_scale)
        result = training.run(spec, job_dir=tmp_path, callbacks=rec, device="cpu")
    skipped = [m for k, m in rec.of("event") if k == "warning"]
    assert skipped and skipped[0].startswith("step 1: inf/NaN gradients")
    assert result.steps == 3


# ---- the examples at full size ------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(("name", "target"), [("digits-mlp", 0.95), ("digits-cnn", 0.97)])
def test_digits_examples_reach_their_targets(tmp_path: Path, name: str, target: float) -> None:
    result, _ = train(example(name), tmp_path)
    assert result.metrics["val_accuracy"] >= target


@pytest.mark.slow
def test_char_lm_beats_the_unigram_baseline(tmp_path: Path) -> None:
    counts = np.array(list(collections.Counter(CORPUS.read_text()).values()), dtype=np.float64)
    p = counts / counts.sum()
    unigram = float(-(p * np.log(p)).sum())
    result, _ = train(example("char-lm"), tmp_path)
    assert result.metrics["val_loss"] < unigram - 0.75
