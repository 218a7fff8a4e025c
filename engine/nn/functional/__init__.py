"""`engine.nn.functional`: PyTorch's stateless neural-network ops.

Each op is a forward over backend arrays plus a Node for its backward, like the core ops
in engine.functions; the layers in engine.nn wrap them.
"""

# --- layers' ops: activation, linear, conv/pool, dropout, normalization, embedding, pad ---

# --- losses and attention ---
