"""`engine.nn.utils`: gradient clipping and parameter/vector conversion, as `torch.nn.utils`."""

from engine.nn.utils.clip_grad import (
    clip_grad_norm_,
    clip_grad_value_,
    clip_grads_with_norm_,
    get_total_norm,
)
from engine.nn.utils.convert_parameters import parameters_to_vector, vector_to_parameters
