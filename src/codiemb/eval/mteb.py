"""MTEB (v2) adapter: run a codiemb :class:`~codiemb.models.encoder.Encoder` through ``mteb.evaluate``.

MTEB calls ``encode(dataloader, task_metadata=, hf_split=, hf_subset=, prompt_type=)``. We map
``prompt_type="document"`` to ``kind="passage"`` and everything else (``"query"``, or ``None`` for
symmetric tasks such as STS) to ``kind="query"``, the same convention as the project's own evaluators, so
both give identical numbers. Texts of one call are encoded together so the encoder's length sort works
across MTEB's batches. Needs the optional ``mteb`` extra (``pip install codiemb[mteb]``).

    import mteb
    from codiemb.eval.mteb import MTEBEncoder
    model = MTEBEncoder.from_pretrained("path/to/export")
    mteb.evaluate(model, mteb.get_tasks(tasks=["STSBenchmark", "SciFact"]), cache=None)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta, ScoringFunction


class MTEBEncoder(AbsEncoder):
    """MTEB's encoder protocol around a codiemb Encoder (cosine similarity, as our embeddings)."""

    def __init__(self, encoder, name: str = "codiemb/model", revision: str = "local", batch_size: int = 64):
        self.model = encoder
        self.batch_size = batch_size
        self.mteb_model_meta = ModelMeta.create_empty(overwrites={
            "name": name if "/" in name else f"codiemb/{name}", "revision": revision,
            "similarity_fn_name": ScoringFunction.COSINE, "embed_dim": encoder.embedding_dim,
            "framework": ["PyTorch"], "modalities": ["text"]})

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs: Any) -> MTEBEncoder:
        from codiemb.models.encoder import Encoder
        name = str(name_or_path).rstrip("/").split("/")[-1].replace("bundled:", "")
        return cls(Encoder.from_pretrained(str(name_or_path)), name=name, **kwargs)

    @staticmethod
    def kind_for(prompt_type) -> str:
        return "passage" if prompt_type is not None and str(getattr(prompt_type, "value", prompt_type)) == \
            "document" else "query"

    def encode(self, inputs, *, task_metadata, hf_split: str, hf_subset: str, prompt_type=None,
               **kwargs: Any) -> np.ndarray:
        texts = [text for batch in inputs for text in batch["text"]]
        batch_size = int(kwargs.get("batch_size") or self.batch_size)
        return self.model.encode(texts, kind=self.kind_for(prompt_type), batch_size=batch_size).numpy()
