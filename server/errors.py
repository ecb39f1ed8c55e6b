"""Errors shared by the server's layers."""


class StoreReadError(Exception):
    """A read (history, last seq) could not be served: pool timeout, store error, deadline."""
