"""codiemb: one encoder, excellent at both retrieval and semantic similarity (CoDiEmb recipe)."""

__version__ = "0.1.0"
