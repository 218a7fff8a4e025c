"""`engine.amp`: automatic mixed precision, as `torch.amp`: `autocast` regions that run
matmul-like ops in float16/bfloat16 and precision-sensitive ones in float32, and
`GradScaler`, the loss scaling that keeps float16 gradients from underflowing."""

from engine.amp.autocast_mode import autocast, get_autocast_dtype, is_autocast_enabled
from engine.amp.grad_scaler import GradScaler, OptState

__all__ = ["GradScaler", "OptState", "autocast", "get_autocast_dtype", "is_autocast_enabled"]
