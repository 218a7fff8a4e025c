"""Trained models kept in memory for POST /jobs/{id}/predict.

Rebuilding a model from its safetensors file costs far more than one prediction, so the
newest few stay loaded. A job's model never changes once written (a finished job is not
trained again in place), so an entry stays valid until the job is deleted (`drop`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from jobs.training import TrainedModel, load_trained_model

DEFAULT_CAPACITY = 8


class ModelCache:
    """A least-recently-used map of job id to its TrainedModel; thread-safe, as sync
    routes run in a thread pool."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._models: OrderedDict[str, TrainedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, job_id: str, path: Path) -> TrainedModel:
        with self._lock:
            if job_id in self._models:
                self._models.move_to_end(job_id)
                return self._models[job_id]
        # loaded outside the lock: other jobs' predictions need not wait for this file;
        # two requests racing here both load, and the later one's copy is kept
        model = load_trained_model(path)
        with self._lock:
            self._models[job_id] = model
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
        return model

    def drop(self, job_id: str) -> None:
        with self._lock:
            self._models.pop(job_id, None)
