"""The ops: forward over backend arrays, and the `Node` that computes each one's backward."""
