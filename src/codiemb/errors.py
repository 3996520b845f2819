"""The project's own error types: every bad input surfaces as one of these, naming where it came from."""

from __future__ import annotations


class CodiembError(Exception):
    """Base class for errors codiemb raises on purpose."""


class DataError(CodiembError, ValueError):
    """A record or file that cannot be used. The message names the file, line and field."""

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.source, self.line, self.field = source, line, field
        where = []
        if source is not None:
            where.append(str(source))
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class ConfigError(CodiembError, ValueError):
    """A configuration that cannot work; the message says what to change."""


class MergeError(CodiembError, ValueError):
    """Checkpoints that cannot be merged (different architectures, tokenizers or shapes)."""


class RunInterrupted(CodiembError, RuntimeError):
    """A run stopped by a signal (SIGTERM from a scheduler, Ctrl-C): ``exit_code`` is 143 or 130, never 0."""

    def __init__(self, message: str, exit_code: int):
        self.exit_code = exit_code
        super().__init__(message)
