"""Python classes of the C++ switchyard::Error hierarchy (common/error.h).

A C++ error arrives as the class named after its code, with str(e) equal to the C++ what()
("InvalidArgument: <message> [rank R] (file:line)") and attributes code, message (the bare
text) and rank (-1 outside a job); PeerFailure also has peer. Each class also derives from the
closest Python built-in, so `except ValueError` catches a bad argument and `except
TimeoutError` a timeout.
"""


class SwitchyardError(RuntimeError):
    """Base of every error raised by the C++ libraries."""


class InvalidArgument(SwitchyardError, ValueError):
    """Fix the call; retrying cannot help."""


class Timeout(SwitchyardError, TimeoutError):
    """A wait ran out; the message names the peers it waited for."""


class PeerFailure(SwitchyardError, ConnectionError):
    """A peer died or misbehaved (attribute peer); rebuild the communicator."""


class IoError(SwitchyardError, OSError):
    """The operating system refused (file, socket, shared memory)."""


class Unsupported(SwitchyardError, NotImplementedError):
    """The build or the machine lacks a feature (e.g. CUDA tensors without the GPU backend)."""


class InternalError(SwitchyardError):
    """A Switchyard invariant broke (a bug)."""
