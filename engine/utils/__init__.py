"""Utilities beside the tensor core, as under `torch.utils`: data loading (`engine.utils.data`)."""
