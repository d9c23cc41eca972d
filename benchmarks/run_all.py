"""Run every benchmark with its default sizes and print the markdown sections (``make bench``).

    python benchmarks/run_all.py                 # items 1-5, methods, validators: 25-45 minutes
    python benchmarks/run_all.py --only step,sinkhorn
    python benchmarks/run_all.py --out bench.md  # also write the sections to a file
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

BENCHMARKS = ("step", "methods", "epoch", "sinkhorn", "export", "cpu_options", "validators")


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default=",".join(BENCHMARKS),
                   help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--out", type=Path, default=None, help="also write the report here")
    a = p.parse_args(argv)
    sections = []
    for name in a.only.split(","):
        if name not in BENCHMARKS:
            p.error(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
        t0 = time.perf_counter()
        text = importlib.import_module(f"bench_{name}").main(["--quick"] if a.quick else [])
        sections.append(f"{text}\n_(bench_{name}: {time.perf_counter() - t0:.0f} s)_\n")
    report = "\n".join(sections)
    if a.out is not None:
        a.out.write_text(report)
    return report


if __name__ == "__main__":
    main()
