"""The typed errors of s2attn (raised by the native extension and by the Python layer)."""


class S2AttnError(Exception):
    """Base class of every s2attn error."""

    argument = None


class InvalidArgumentError(S2AttnError, ValueError):
    """An invalid argument; ``.argument`` names it and the message states the expectation."""

    def __init__(self, message, argument=None):
        super().__init__(message)
        if argument is not None:
            self.argument = argument


class DTypeError(InvalidArgumentError, TypeError):
    """An argument of a dtype the op does not accept."""


class UnsupportedError(S2AttnError, NotImplementedError):
    """A valid request that this build cannot serve (a backend or kernel variant not compiled in)."""


class DeviceError(S2AttnError, RuntimeError):
    """A failure reported by the device runtime."""


def invalid(argument, expectation, cls=InvalidArgumentError):
    """Build the error the C++ layer would raise for `argument`."""
    return cls(f"invalid argument '{argument}': {expectation}", argument)
