"""The domain, no web or queue code: job specs, models, data sets, the training loop,
settings and the store (shared/DESIGN.md)."""
