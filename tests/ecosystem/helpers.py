"""Helpers for the ecosystem tests: tiny decoder checkpoints built from configs, a W&B run-file reader."""

from __future__ import annotations

import struct
import time
from pathlib import Path

# A few optimizer steps on the tiny model with every export kept; validation on the example sets.
FAST = ["trainer=default", "trainer.max_steps=2", "trainer.log_every_n_steps=1", "checkpoint_every_n_steps=1",
        "data.num_workers=0", "data.ir_batch_size=4", "data.sts_batch_size=8"]
TINY_BERT = "{hidden_size:64,num_hidden_layers:2,num_attention_heads:2,intermediate_size:128}"


def save_tiny_decoder(directory: Path, kind: str) -> Path:
    """A small Qwen3 or Llama config + the bundled MiniLM tokenizer, saved like a hub checkpoint (no weights)."""
    from transformers import AutoTokenizer, LlamaConfig, Qwen3Config

    from codiemb.models.resolve import bundled_minilm_path

    tokenizer = AutoTokenizer.from_pretrained(bundled_minilm_path())
    common = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                  pad_token_id=tokenizer.pad_token_id)
    config = Qwen3Config(**common) if kind == "qwen3" else LlamaConfig(**common)
    config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def wandb_records(run_file: Path):
    """Parse a W&B ``run-*.wandb`` file: a LevelDB-style log (7-byte file header ':W&B' + magic + version, 32 KiB
    blocks, each record ``crc32 (4) | length (2) | type (1: full, 2: first, 3: middle, 4: last)``) of
    ``wandb_internal_pb2.Record`` protobufs."""
    from wandb.proto import wandb_internal_pb2

    data, block = run_file.read_bytes(), 32768
    assert data[:4] == b":W&B", f"{run_file} is not a W&B run file"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def finished_wandb_records(run_file: Path, timeout: float = 60.0) -> list:
    """The records of a finished offline run. ``wandb.finish()`` can return before wandb's service process has
    written the file's tail (seen under load), so wait until the run's ``exit`` record is on disk."""
    from google.protobuf.message import DecodeError

    deadline = time.monotonic() + timeout
    while True:
        try:
            records = list(wandb_records(run_file))
        except DecodeError:  # a record cut off mid-write: read again
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)
