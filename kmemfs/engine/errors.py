"""The one exception the engine raises: a kernel errno with a message."""
import errno as _errno
import os


class EngineError(Exception):
    """A rule of the kernel refused the operation; `errno` is what the syscall returns."""

    def __init__(self, err: int, message: str = ""):
        super().__init__(err, message or os.strerror(err))
        self.errno = err
        self.message = message or os.strerror(err)

    def __str__(self) -> str:
        return f"{_errno.errorcode.get(self.errno, self.errno)}: {self.message}"
