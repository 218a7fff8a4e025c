"""`engine.nn.functional`: PyTorch's stateless neural-network ops.

Each op is a forward over backend arrays plus a Node for its backward, like the core ops
in engine.functions; the layers in engine.nn wrap them.
"""

# --- layers' ops: activation, linear, conv/pool, dropout, normalization, embedding, pad ---
from engine.nn.functional.activation import (
    gelu,
    leaky_relu,
    log_softmax,
    relu,
    sigmoid,
    silu,
    softmax,
    tanh,
)
from engine.nn.functional.conv import avg_pool2d, conv2d, max_pool2d
from engine.nn.functional.dropout import dropout
from engine.nn.functional.linear import linear
from engine.nn.functional.normalization import batch_norm, layer_norm
from engine.nn.functional.padding import pad
from engine.nn.functional.sparse import embedding, one_hot

# --- losses and attention ---
# isort: split
from engine.nn.functional.attention import scaled_dot_product_attention
from engine.nn.functional.loss import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    huber_loss,
    l1_loss,
    mse_loss,
    nll_loss,
    sigmoid_focal_loss,
    smooth_l1_loss,
)
