"""Decoder backbones: pooling under left padding, and the bidirectional-attention switch."""

from __future__ import annotations

import pytest
import torch

from codiemb.errors import ConfigError
from codiemb.models.encoder import Encoder

SHORT, LONG = "billing", "the cat sat on the mat while it rained outside all day long"


def build(directory, **kwargs) -> Encoder:
    torch.manual_seed(0)
    return Encoder.from_pretrained(str(directory), random_init=True, normalize=False, **kwargs)


@pytest.mark.parametrize("kind", ["qwen3", "llama"])
@pytest.mark.parametrize("pooling", ["last_token", "weighted_mean", "mean"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_left_padding_does_not_change_an_embedding(decoder_dirs, kind, pooling, bidirectional):
    """A text embedded alone equals the same text left-padded in a batch with a longer one (RoPE is shift
    invariant and padding is masked), for causal and bidirectional attention."""
    encoder = build(decoder_dirs[kind], pooling=pooling, padding_side="left", bidirectional=bidirectional)
    alone = encoder.encode([SHORT], batch_size=1)
    batched = encoder.encode([SHORT, LONG], batch_size=2)
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["qwen3", "llama"])
def test_bidirectional_switch_lets_early_tokens_see_later_ones(decoder_dirs, kind):
    """With ``cls`` pooling (first real token): causal attention makes it blind to the rest of the text;
    bidirectional attention does not."""
    texts = ["alpha beta gamma", "alpha beta delta"]  # same first tokens, different last word
    causal = build(decoder_dirs[kind], pooling="cls", padding_side="left").encode(texts)
    full = build(decoder_dirs[kind], pooling="cls", padding_side="left", bidirectional=True).encode(texts)
    torch.testing.assert_close(causal[0], causal[1])
    assert (full[0] - full[1]).abs().max() > 1e-3


def test_bidirectional_is_refused_where_unsupported():
    with pytest.raises(ConfigError, match="attends both ways already"):
        Encoder.from_pretrained("bundled:all-MiniLM-L6-v2", random_init=True, bidirectional=True,
                                config_overrides=dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                                                      intermediate_size=64))


def test_bidirectional_setting_survives_export(decoder_dirs, tmp_path):
    encoder = build(decoder_dirs["qwen3"], pooling="last_token", padding_side="left", bidirectional=True)
    encoder.save(tmp_path / "out")
    reloaded = Encoder.from_pretrained(str(tmp_path / "out"))
    assert reloaded.bidirectional
    torch.testing.assert_close(reloaded.encode([SHORT, LONG]), encoder.encode([SHORT, LONG]))
    assert "bidirectional attention" in (tmp_path / "out" / "README.md").read_text()
