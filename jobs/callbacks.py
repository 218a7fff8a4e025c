"""How the training loop reports: one `Callbacks` object per run.

The loop calls these hooks and nothing else, so the CLI (a progress bar) and a worker
(rows in the store) share the loop unchanged. Every hook defaults to doing nothing;
subclass and override what you need. A hook that raises stops the run with that error
(no checkpoint is written for it), which is how a crash looks to the loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class Callbacks:
    """No-op hooks. Order within one optimizer step: `on_step`, then `on_eval` (when an
    evaluation is due), then `on_checkpoint` (when one is due), then `should_cancel`."""

    def on_step(self, step: int, metrics: dict[str, Any]) -> None:
        """After each optimizer step. `metrics`: loss, lr, epoch, total_steps, samples,
        samples_per_s."""

    def on_eval(self, step: int, metrics: dict[str, Any]) -> None:
        """After each evaluation: val_loss, and val_accuracy (classification) or
        val_perplexity (language models)."""

    def on_event(self, kind: str, message: str) -> None:
        """Something worth a line in a log: kind is "info" or "warning"."""

    def on_resume(self, step: int, path: Path) -> None:
        """Before the first step of a run that continues from the checkpoint at `path`:
        the steps after `step`, if an earlier run reported them, are trained again."""

    def on_checkpoint(self, step: int, path: Path) -> None:
        """After a checkpoint is written (atomically) at `path`."""

    def should_cancel(self) -> bool:
        """Checked between optimizer steps; True stops the run with a checkpoint."""
        return False
