"""``DecodeError``: the one exception a codec's ``decode`` raises (re-exported by ``codec``).

It lives in its own module so that the codec modules and the registry in ``codec`` can
all import it without an import cycle.
"""

__all__ = ["DecodeError"]


class DecodeError(ValueError):
    """A frame is not a valid chat.v1 envelope. ``reason`` says why, for logs and errors.

    The server answers it with ``Error{code="bad_frame"}``. It is the only exception
    ``Codec.decode`` raises.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
