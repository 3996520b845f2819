"""Memory of a command over its run: RSS and PSS of its whole process tree, sampled every second, and each
sample attributed to the last line its log had written by then (what the run was doing).

    python bench/rss.py -- python train.py experiment=real_cpu        # prints the peak and the phase table
    from rss import RssSampler                                          # bench/peer.py samples both trainers

PSS (proportional set size) counts a page shared by several processes once in all: a DataLoader worker forked
from the trainer shares most of its pages, so the tree's RSS sum double-counts them and its PSS sum does not.
Written here because psutil gives the numbers but no sampler over a process tree.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\]")


class RssSampler(threading.Thread):
    """Every ``every`` seconds: (seconds since start, tree RSS MiB, tree PSS MiB, main process RSS MiB)."""

    def __init__(self, pid: int, every: float = 1.0):
        super().__init__(daemon=True)
        self.pid, self.every, self.samples, self.started = pid, every, [], time.time()
        self.stop = threading.Event()

    @property
    def peak_rss(self) -> int:
        return max((s[1] for s in self.samples), default=0)

    @property
    def peak_pss(self) -> int:
        return max((s[2] for s in self.samples), default=0)

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self.stop.is_set():
            rss = pss = main = 0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for proc in procs:
                try:
                    info = proc.memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                rss, pss = rss + info.rss, pss + info.pss
                main = info.rss if proc.pid == self.pid else main
            if rss:
                self.samples.append((round(time.time() - self.started, 1), rss >> 20, pss >> 20, main >> 20))
            self.stop.wait(self.every)


def phases(samples: list, started: float, log_text: str) -> list[dict]:
    """Each log line's window (until the next line) with the highest tree PSS/RSS sampled in it, in order;
    lines without a timestamp belong to the line before them."""
    lines = []
    for line in log_text.splitlines():
        match = STAMP.match(line)
        if match:
            when = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(match.group(2)) / 1000
            lines.append((when - started, line[match.end():].strip()[:160]))
    out: list[dict] = []
    for t, rss, pss, _ in samples:
        label = "(before the first log line)"
        for when, text in lines:
            if when > t:
                break
            label = text
        if not out or out[-1]["line"] != label:
            out.append({"line": label, "from_s": t, "peak_pss_mib": pss, "peak_rss_mib": rss})
        else:
            out[-1]["peak_pss_mib"] = max(out[-1]["peak_pss_mib"], pss)
            out[-1]["peak_rss_mib"] = max(out[-1]["peak_rss_mib"], rss)
    return out


def measure(cmd: list[str], log: Path, cwd: Path, env: dict | None = None, every: float = 1.0) -> dict:
    """Run ``cmd`` (stdout and stderr to ``log``) under the sampler; the result a bench file records."""
    started = time.time()
    with open(log, "w") as handle:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT)
        sampler = RssSampler(proc.pid, every)
        sampler.start()
        rc = proc.wait()
    sampler.stop.set()
    sampler.join()
    return {"returncode": rc, "wall_s": round(time.time() - started, 1), "started_unix": started,
            "peak_tree_rss_mib": sampler.peak_rss, "peak_tree_pss_mib": sampler.peak_pss,
            "peak_main_rss_mib": max((s[3] for s in sampler.samples), default=0),
            "samples": sampler.samples, "phases": phases(sampler.samples, started, log.read_text(errors="replace"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--log", default="/tmp/rss-run.log")
    parser.add_argument("--out", help="write the measurement (JSON) here")
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    result = measure(cmd, Path(args.log), Path.cwd(), dict(os.environ))
    print(f"peak: tree PSS {result['peak_tree_pss_mib']} MiB, tree RSS {result['peak_tree_rss_mib']} MiB, "
          f"main RSS {result['peak_main_rss_mib']} MiB; wall {result['wall_s']} s; rc {result['returncode']}")
    for phase in sorted(result["phases"], key=lambda p: -p["peak_pss_mib"])[:15]:
        print(f"{phase['peak_pss_mib']:>7} MiB PSS  {phase['peak_rss_mib']:>7} MiB RSS  t={phase['from_s']:>7}s  "
              f"{phase['line']}")
    if args.out:  # the measured command, beside this script's own provenance (bench/provenance.py)
        from provenance import write_result

        kept = {**result, "samples": result["samples"][::5]}  # phases came from every sample; one in five kept
        write_result(args.out, {"measured_command": " ".join(cmd), **kept}, result["started_unix"])
    sys.exit(result["returncode"])


if __name__ == "__main__":
    main()
