"""Which existing ``merge.output`` a merge may replace: nothing but an empty directory or a model codiemb wrote.

The merge writes its output into a temporary sibling and renames it over ``merge.output``, so whatever was at
that path is gone afterwards. Every merged model therefore carries a marker file, :data:`MARKER`; an existing
``merge.output`` is replaced only when it is an empty directory or holds that marker (a previous merge, e.g.
``<run>/merged`` of a training run that is resumed). Anything else (a user's folder, a training run, an exported
or downloaded model, a file) is refused with one line naming the path, before any merging work.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from codiemb.errors import ConfigError

MARKER = ".codiemb_model"


def check_output(output: str | Path) -> None:
    """Raise ConfigError unless ``output`` is absent, an empty directory, or a directory holding :data:`MARKER`."""
    output = Path(output)
    if not os.path.lexists(output):
        return
    if output.is_dir():
        entries = sorted(item.name for item in output.iterdir())
        if not entries or MARKER in entries:
            return
        shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
        why = f"it holds {shown} and no {MARKER} marker"
    else:
        why = "it is a file, not a directory" if output.is_file() else "it is not a directory"
    raise ConfigError(f"merge.output={output} exists and is not a model codiemb wrote ({why}); a merge would "
                      "replace it entirely, so nothing was merged: choose a new or empty directory for "
                      "merge.output, or remove that one yourself")


def write_marker(directory: str | Path, method: str) -> None:
    """Mark ``directory`` (the merged model, before it is renamed into place) as written by codiemb."""
    note = {"written_by": "codiemb merge", "method": method,
            "meaning": "codiemb replaces this directory when it is named as merge.output again; "
                       "remove this file to protect the directory from that"}
    (Path(directory) / MARKER).write_text(json.dumps(note, indent=2) + "\n")
