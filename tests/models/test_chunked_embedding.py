"""`module.embed_chunk_size` (GradCache-style chunked encoding) gives the gradients of the un-chunked loss."""

import pytest
import torch

from tests import dist_worker


@pytest.mark.parametrize("task", ["ir", "sts"])
def test_chunked_encoding_matches_the_whole_batch(task):
    whole = dist_worker.build()
    chunked = dist_worker.build()
    chunked.hparams.embed_chunk_size = 3  # 8 queries and 9-19 passages -> several chunks, a ragged last one
    batch = dist_worker.collate(whole, dist_worker.records(task))
    reference = dist_worker.gradients(whole, batch)
    grads = dist_worker.gradients(chunked, batch)
    loss_whole, loss_chunked = whole.compute_loss(batch)[0], chunked.compute_loss(batch)[0]
    assert torch.allclose(loss_whole, loss_chunked, atol=1e-6)
    floor = 1e-3 * float(torch.cat([g.flatten() for g in reference.values()]).norm())
    for name, g in reference.items():
        assert float((grads[name] - g).norm()) <= 1e-5 * max(float(g.norm()), floor), name


def test_chunking_drops_activations_between_forward_and_backward():
    """The point of the option: fewer saved tensors alive while the loss waits for its backward."""
    module = dist_worker.build()
    batch = dist_worker.collate(module, dist_worker.records("ir"))

    def saved_bytes(chunk):
        module.hparams.embed_chunk_size = chunk
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            module.compute_loss(batch)
        return total
    assert saved_bytes(2) < 0.5 * saved_bytes(None)
