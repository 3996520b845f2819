"""Readers turn a file format into unified :class:`~codiemb.data.schema.Record` lists.

Every reader has the signature ``read(path, *, name, task=None, split=None, on_error="raise", **options)
-> ReadResult``. Formats are looked up by name and imported lazily, so one broken optional format never
breaks the others.
"""

from __future__ import annotations

import importlib

from codiemb.data.readers.base import ReadResult
from codiemb.errors import ConfigError

FORMATS = {
    "jsonl": "codiemb.data.readers.unified:read_jsonl",
    "hf": "codiemb.data.readers.unified:read_hf",
    "stsb": "codiemb.data.readers.stsb:read_stsb",
    "beir": "codiemb.data.readers.beir:read_beir",
    "semeval_sts": "codiemb.data.readers.semeval:read_semeval_sts",
    "snli": "codiemb.data.readers.snli:read_snli",
    "mrpc": "codiemb.data.readers.mrpc:read_mrpc",
    "wikiqa": "codiemb.data.readers.wikiqa:read_wikiqa",
    "qpn_jsonl": "codiemb.data.readers.qpn:read_qpn_jsonl",
}


def get_reader(fmt: str):
    if fmt not in FORMATS:
        raise ConfigError(f"unknown data format {fmt!r}; known formats: {', '.join(sorted(FORMATS))}")
    module, func = FORMATS[fmt].split(":")
    return getattr(importlib.import_module(module), func)


def read_dataset(fmt: str, path: str, **options) -> ReadResult:
    return get_reader(fmt)(path, **options)


__all__ = ["FORMATS", "ReadResult", "get_reader", "read_dataset"]
