"""`engine.optim`: PyTorch's optimizers and learning-rate schedulers on engine tensors.

Each optimizer follows PyTorch's single-tensor (for-loop) update op for op, so runs agree
with PyTorch's to float32 rounding; state dicts have PyTorch's layout and names.
"""

from engine.optim import lr_scheduler
from engine.optim.adagrad import Adagrad
from engine.optim.adam import Adam, AdamW
from engine.optim.optimizer import Optimizer
from engine.optim.rmsprop import RMSprop
from engine.optim.sgd import SGD

__all__ = ["SGD", "Adagrad", "Adam", "AdamW", "Optimizer", "RMSprop", "lr_scheduler"]
