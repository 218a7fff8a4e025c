"""Array backends: the few operations NumPy and CuPy spell differently.

Ops are written once against a device's array module (`device.xp`); what cannot be
written that way lives here, in `ArrayOps` (generic, NumPy) and its CuPy subclass,
which overrides only what it must with the same signatures (a test checks them).
"""
