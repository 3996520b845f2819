"""The pread reader returns exactly what safetensors' own loader returns, row ranges too; bad files raise."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from codiemb.errors import MergeError
from codiemb.merge.safetensors_io import SafetensorsFile


def test_reads_match_safetensors_load_file(tmp_path):
    torch.manual_seed(0)
    tensors = {"w": torch.randn(7, 3, 2), "half": torch.randn(5, 4).to(torch.bfloat16),
               "ids": torch.arange(6, dtype=torch.int64), "scalar": torch.tensor(2.5),
               "empty": torch.zeros(0, 3)}
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt", "note": "x"})
    reference = load_file(str(path))
    with SafetensorsFile(path) as f:
        assert sorted(f.keys()) == sorted(tensors) and f.metadata == {"format": "pt", "note": "x"}
        for name, tensor in reference.items():
            assert f.dtype(name) == tensor.dtype and f.shape(name) == list(tensor.shape)
            assert torch.equal(f.read(name), tensor)
        assert torch.equal(f.read("w", 2, 5), reference["w"][2:5])
        assert torch.equal(f.read("half", 4, 5), reference["half"][4:5])


def test_truncated_or_foreign_file_raises(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.randn(100)}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[:-8])
    with SafetensorsFile(path) as f, pytest.raises(MergeError, match="ends early"):
        f.read("w")
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(MergeError, match="bad.safetensors"):
        SafetensorsFile(tmp_path / "bad.safetensors")
