"""The domain: job specs, the training loop, data sets and the store; arrives with jobs."""
