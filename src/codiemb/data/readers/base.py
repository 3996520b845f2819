"""What every reader returns, and the shared skip-or-raise policy."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from codiemb.data.schema import Record
from codiemb.errors import ConfigError, DataError

ON_ERROR = ("raise", "skip")


@dataclass
class ReadResult:
    """Records of one dataset plus how many rows were dropped, by reason."""

    records: list[Record]
    skipped: Counter = field(default_factory=Counter)

    def summary(self, name: str) -> str:
        dropped = sum(self.skipped.values())
        reasons = ", ".join(f"{reason}: {count}" for reason, count in self.skipped.most_common())
        return f"{name}: {len(self.records)} rows" + (f" ({dropped} skipped: {reasons})" if dropped else "")


class RowPolicy:
    """Apply ``on_error``: re-raise a :class:`DataError` or count it under its field and move on."""

    def __init__(self, on_error: str = "raise"):
        if on_error not in ON_ERROR:
            raise ConfigError(f"data.on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.on_error = on_error
        self.skipped: Counter = Counter()

    def handle(self, error: DataError) -> None:
        if self.on_error == "raise":
            raise error
        self.skipped[f"bad {error.field}" if error.field else "malformed row"] += 1


def decode_line(raw: bytes, source: str, line: int) -> str:
    """One line of a UTF-8 file, or a :class:`DataError` naming file and line (instead of UnicodeDecodeError)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"not valid UTF-8 ({exc.reason} at byte {exc.start})", source=source, line=line) from None


def split_file(path: str | Path, split: str | None, pattern: str, splits: str) -> Path:
    """``path`` itself when it is a file, else ``path / pattern.format(split=split)`` (e.g. a release folder)."""
    path = Path(path)
    if path.is_dir():
        if split is None:
            raise ConfigError(f"{path} is a directory: name the split ({splits})")
        path = path / pattern.format(split=split)
    if not path.is_file():
        raise DataError("file not found", source=str(path))
    return path
