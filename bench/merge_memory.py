"""Peak memory of the merge stage for K = 2, 4, 8 all-MiniLM-L6-v2 checkpoints, against the model size.

    python bench/merge_memory.py                    # delta merge, K = 2 4 8
    python bench/merge_memory.py --k 2 4 8 16 --method ties --naive

Checkpoints are the bundled all-MiniLM-L6-v2 with seeded Gaussian noise (std 1e-3) on every float tensor; the
base is the bundled directory itself. Each merge runs in a fresh subprocess; "peak" is its VmHWM (from
/proc/self/status; not ru_maxrss, which Linux carries over from the forking parent across exec) and
"above import" subtracts the RSS measured after importing torch + codiemb.merge (before any tensor is read).
``--naive`` also times the obvious alternative: load_file() every state dict, then merge in memory.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time
import psutil, torch
torch.set_num_threads(1)
from codiemb.merge import merge_models
from codiemb.merge.methods import delta_merge
from safetensors.torch import load_file, save_file
base, ckpts, out, method, naive = json.loads(sys.argv[1])
after_import = psutil.Process().memory_info().rss
start = time.perf_counter()
if naive:
    w0, ws = load_file(base + "/model.safetensors"), [load_file(c + "/model.safetensors") for c in ckpts]
    merged = {n: delta_merge(w0[n], [w[n] for w in ws]) if t.is_floating_point() else t
              for n, t in ws[-1].items()}
    save_file(merged, out + ".naive.safetensors")
else:
    merge_models(base, ckpts, out, method=method)
seconds = time.perf_counter() - start
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
peak = int(status["VmHWM"].split()[0]) * 1024
print(json.dumps({"after_import": after_import, "peak": peak, "seconds": seconds}))
"""


def make_checkpoints(source: Path, root: Path, k: int) -> list[Path]:
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(source / "model.safetensors"))
    dirs = []
    for i in range(k):
        target = root / f"ckpt{i}"
        if not target.exists():
            shutil.copytree(source, target)
            generator = torch.Generator().manual_seed(i)
            noisy = {n: t + 1e-3 * torch.randn(t.shape, generator=generator) if t.is_floating_point() else t
                     for n, t in tensors.items()}
            save_file(noisy, str(target / "model.safetensors"), metadata={"format": "pt"})
        dirs.append(target)
    return dirs


def measure(base: Path, ckpts: list[Path], out: Path, method: str, naive: bool) -> dict:
    args = json.dumps([str(base), [str(c) for c in ckpts], str(out), method, naive])
    result = subprocess.run([sys.executable, "-c", CHILD, args], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    from codiemb.models.resolve import bundled_minilm_path

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--method", default="delta")
    parser.add_argument("--naive", action="store_true", help="also measure load-everything-then-merge")
    args = parser.parse_args()
    base = Path(bundled_minilm_path())
    model_mb = (base / "model.safetensors").stat().st_size / 2**20
    mib = 2**20
    print(f"model.safetensors: {model_mb:.1f} MiB; method {args.method}")
    print(f"{'K':>3} {'mode':>9} {'peak MiB':>9} {'above import':>13} {'x model':>8} {'seconds':>8}")
    with tempfile.TemporaryDirectory(prefix="merge-bench-") as tmp:
        ckpts = make_checkpoints(base, Path(tmp), max(args.k))
        for k in args.k:
            for naive in ([False, True] if args.naive else [False]):
                r = measure(base, ckpts[:k], Path(tmp) / f"out{k}", args.method, naive)
                above = (r["peak"] - r["after_import"]) / mib
                print(f"{k:>3} {'naive' if naive else 'streamed':>9} {r['peak'] / mib:>9.0f} {above:>13.0f} "
                      f"{above / model_mb:>8.2f} {r['seconds']:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
