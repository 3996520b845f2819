import pytest

from tests.ecosystem.helpers import save_tiny_decoder


@pytest.fixture(scope="session")
def decoder_dirs(tmp_path_factory):
    """Tiny Qwen3 and Llama checkpoints (config + tokenizer, no weights) built locally."""
    root = tmp_path_factory.mktemp("decoders")
    return {kind: save_tiny_decoder(root / kind, kind) for kind in ("qwen3", "llama")}
