"""The engine's own exceptions: what went wrong, in which op, on which operands."""


class ShapeError(RuntimeError):
    """Operands whose shapes an op cannot combine; the message names the op and both shapes."""


class DeviceError(RuntimeError):
    """Operands on different devices in one op; the message names the op and both devices."""
