"""`GradScaler`: loss scaling for float16 training, PyTorch's algorithm step for step.

`scale(loss)` multiplies by the scale; `unscale_(opt)` divides the optimizer's gradients
by it in place and notes, per device, whether any of them holds an inf or NaN
(PyTorch's `_amp_foreach_non_finite_check_and_unscale_`); `step(opt)` skips the
optimizer's step when one did; `update()` backs the scale off after a skipped step and
grows it after `growth_interval` clean ones (`_amp_update_scale_`). The checks and the
update stay on the gradients' device as 0-d arrays: `step` reads the verdict once, the
one host synchronisation of a step. Unlike PyTorch's CUDA default, the scaler does not
switch itself off on a machine without a GPU: it works on CPU tensors as on CUDA ones.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from enum import Enum
from typing import Any

import numpy as np

from engine.autograd import counter, no_grad
from engine.device import device
from engine.functions.convert import to_device
from engine.tensor import Tensor, wrap

_F32, _F64, _I32 = np.float32, np.float64, np.int32


class OptState(Enum):
    READY = 0
    UNSCALED = 1
    STEPPED = 2


def _refresh_per_optimizer_state() -> dict[str, Any]:
    return {"stage": OptState.READY, "found_inf_per_device": {}}


def _on(arr: Any, source: device, target: device) -> Any:
    """A 0-d array of `source` on `target` (itself when they are the same device)."""
    return arr if source is target else to_device(wrap(arr, source), target)._data


class GradScaler:
    def __init__(
        self,
        device: str | None = None,
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        enabled: bool = True,
    ) -> None:
        self._device = device
        self._enabled = enabled
        if self._enabled:
            if growth_factor <= 1.0:
                raise AssertionError("The growth factor must be > 1.0.")
            if backoff_factor >= 1.0:
                raise AssertionError("The backoff factor must be < 1.0.")
            self._init_scale = init_scale
            # _scale and _growth_tracker are made on the device of the first scale() call
            self._scale: Tensor | None = None
            self._growth_factor = growth_factor
            self._backoff_factor = backoff_factor
            self._growth_interval = growth_interval
            self._init_growth_tracker = 0
            self._growth_tracker: Tensor | None = None
            self._per_optimizer_states: dict[int, dict[str, Any]] = defaultdict(
                _refresh_per_optimizer_state
            )

    def _check_scale_growth_tracker(self, funcname: str) -> tuple[Tensor, Tensor]:
        fix = (
            "This may indicate your script did not use scaler.scale(loss or outputs) earlier "
            "in the iteration."
        )
        if self._scale is None or self._growth_tracker is None:
            raise AssertionError(f"Attempted {funcname} but _scale is None.  " + fix)
        return self._scale, self._growth_tracker

    def _lazy_init_scale_growth_tracker(self, dev: device) -> None:
        xp = dev.xp
        self._scale = wrap(xp.full((), self._init_scale, dtype=_F32), dev)
        self._growth_tracker = wrap(xp.full((), self._init_growth_tracker, dtype=_I32), dev)

    def _scale_on(self, dev: device) -> Tensor:
        if self._scale is None:
            self._lazy_init_scale_growth_tracker(dev)
        scale = self._scale
        assert scale is not None
        return scale if scale._device is dev else wrap(_on(scale._data, scale._device, dev), dev)

    def scale(self, outputs: Any) -> Any:
        """outputs (a tensor, or nested lists/tuples/iterables of them) times the scale."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, Tensor):
            return outputs * self._scale_on(outputs._device)
        if isinstance(outputs, list | tuple):
            return type(outputs)(self.scale(v) for v in outputs)
        if isinstance(outputs, Iterable):
            return map(self.scale, outputs)
        raise ValueError("outputs must be a Tensor or an iterable of Tensors")

    def _unscale_grads_(
        self, optimizer: Any, inv_scale: Any, found_inf: Any, allow_fp16: bool
    ) -> dict[device, Any]:
        """Multiply every gradient by inv_scale in place; per device, a 0-d float32 array
        that is 1.0 where one of them held an inf or NaN, else 0.0."""
        home = self._scale._device  # type: ignore[union-attr]
        found: dict[device, Any] = {}
        inv: dict[device, Any] = {}
        with no_grad():
            for group in optimizer.param_groups:
                for param in group["params"]:
                    grad = param.grad
                    if grad is None:
                        continue
                    gd = grad._data
                    if not allow_fp16 and gd.dtype == np.float16:
                        raise ValueError("Attempting to unscale FP16 gradients.")
                    dev = grad._device
                    f = found.get(dev)
                    if f is None:
                        f = found[dev] = _on(found_inf, home, dev).copy()
                        inv[dev] = _on(inv_scale, home, dev)
                    xp = dev.xp
                    # all() of isfinite is one device scalar; maximum folds it into f
                    # on the device, so nothing here waits for the GPU.
                    xp.maximum(f, ~xp.isfinite(gd).all(), out=f)
                    xp.multiply(gd, inv[dev], out=gd, casting="unsafe")
                    counter(grad)[0] += 1
        return found

    def unscale_(self, optimizer: Any) -> None:
        """Divide the optimizer's gradients by the scale, once between steps (call it
        before clipping gradients; step() calls it when it was not)."""
        if not self._enabled:
            return
        scale, _ = self._check_scale_growth_tracker("unscale_")
        state = self._per_optimizer_states[id(optimizer)]
        if state["stage"] is OptState.UNSCALED:
            raise RuntimeError(
                "unscale_() has already been called on this optimizer since the last update()."
            )
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        xp = scale._device.xp
        # the reciprocal in float64, rounded once to float32, as PyTorch computes it
        inv_scale = (1.0 / scale._data.astype(_F64)).astype(_F32)
        found_inf = xp.zeros((), dtype=_F32)
        state["found_inf_per_device"] = self._unscale_grads_(optimizer, inv_scale, found_inf, False)
        state["stage"] = OptState.UNSCALED

    def step(self, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
        """optimizer.step(*args, **kwargs) unless a gradient held an inf or NaN; unscales
        first if unscale_ was not called. Returns the step's result, or None if skipped."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is enabled.")
        self._check_scale_growth_tracker("step")
        state = self._per_optimizer_states[id(optimizer)]
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if state["stage"] is OptState.READY:
            self.unscale_(optimizer)
        found = state["found_inf_per_device"]
        if len(found) == 0:
            raise AssertionError("No inf checks were recorded for this optimizer.")
        retval = None
        # the step's one host synchronisation (one per device holding gradients)
        if not sum(v.item() for v in found.values()):
            retval = optimizer.step(*args, **kwargs)
        state["stage"] = OptState.STEPPED
        return retval

    def update(self, new_scale: float | Tensor | None = None) -> None:
        """Back the scale off if any step since the last update was skipped, grow it after
        growth_interval clean steps in a row; or set it to new_scale."""
        if not self._enabled:
            return
        scale, tracker = self._check_scale_growth_tracker("update")
        sd = scale._data
        if new_scale is not None:
            if isinstance(new_scale, float | int):
                sd.fill(new_scale)
            else:
                reason = (
                    "new_scale should be a float or a 1-element FloatTensor with "
                    "requires_grad=False."
                )
                if self._device is not None and new_scale.device.type != self._device:
                    raise AssertionError(reason)
                if new_scale.numel() != 1 or new_scale.requires_grad:
                    raise AssertionError(reason)
                src = _on(new_scale._data, new_scale._device, scale._device)
                sd[...] = src.reshape(())
        else:
            home = scale._device
            found_infs = [
                _on(f, dev, home)
                for state in self._per_optimizer_states.values()
                for dev, f in state["found_inf_per_device"].items()
            ]
            if len(found_infs) == 0:
                raise AssertionError("No inf checks were recorded prior to update.")
            combined = found_infs[0]
            for f in found_infs[1:]:
                combined = combined + f
            self._update_scale(home.xp, sd, tracker._data, combined)
        self._per_optimizer_states = defaultdict(_refresh_per_optimizer_state)

    def _update_scale(self, xp: Any, scale: Any, tracker: Any, found_inf: Any) -> None:
        """PyTorch's _amp_update_scale_ as device-side selects (no branch on the host):
        on an inf, scale *= backoff and the tracker restarts; otherwise the tracker
        counts up, and at growth_interval the scale grows (if it stays finite) and the
        tracker restarts. Products in float64 rounded to float32, as its kernel does."""
        found = found_inf != 0
        successful = tracker + 1
        grow = successful == self._growth_interval
        wide = scale.astype(_F64)
        with np.errstate(over="ignore"):  # a grown scale past float32's range: kept as is
            grown = (wide * self._growth_factor).astype(_F32)
        backed = (wide * self._backoff_factor).astype(_F32)
        kept = xp.where(grow & xp.isfinite(grown), grown, scale)
        scale[...] = xp.where(found, backed, kept)
        tracker[...] = xp.where(found | grow, 0, successful)

    def get_scale(self) -> float:
        """The current scale as a float (a host synchronisation), 1.0 when disabled."""
        if not self._enabled:
            return 1.0
        return float(self._init_scale if self._scale is None else self._scale._data.item())

    def get_growth_factor(self) -> float:
        return self._growth_factor

    def set_growth_factor(self, new_factor: float) -> None:
        self._growth_factor = new_factor

    def get_backoff_factor(self) -> float:
        return self._backoff_factor

    def set_backoff_factor(self, new_factor: float) -> None:
        self._backoff_factor = new_factor

    def get_growth_interval(self) -> int:
        return self._growth_interval

    def set_growth_interval(self, new_interval: int) -> None:
        self._growth_interval = new_interval

    def _get_growth_tracker(self) -> int:
        if not self._enabled:
            return 0
        if self._growth_tracker is None:
            return self._init_growth_tracker
        return int(self._growth_tracker._data.item())

    def is_enabled(self) -> bool:
        return self._enabled

    def state_dict(self) -> dict[str, Any]:
        """scale, growth_factor, backoff_factor, growth_interval and _growth_tracker, as
        PyTorch's (empty when disabled); take it after update()."""
        if not self._enabled:
            return {}
        return {
            "scale": self.get_scale(),
            "growth_factor": self._growth_factor,
            "backoff_factor": self._backoff_factor,
            "growth_interval": self._growth_interval,
            "_growth_tracker": self._get_growth_tracker(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError(
                "The source state dict is empty, possibly because it was saved "
                "from a disabled instance of GradScaler."
            )
        self._init_scale = float(state_dict["scale"])
        if self._scale is not None:
            self._scale._data.fill(state_dict["scale"])
        self._growth_factor = float(state_dict["growth_factor"])
        self._backoff_factor = float(state_dict["backoff_factor"])
        self._growth_interval = int(state_dict["growth_interval"])
        self._init_growth_tracker = int(state_dict["_growth_tracker"])
        if self._growth_tracker is not None:
            self._growth_tracker._data.fill(state_dict["_growth_tracker"])
