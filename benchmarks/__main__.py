"""Run every benchmark section, print the table, and write docs/PERFORMANCE.md.

python -m benchmarks            # full run, writes docs/PERFORMANCE.md
python -m benchmarks --quick    # fewer rounds, prints only
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
from pathlib import Path

from .harness import Row

SECTIONS = (
    "bench_inprocess",
    "bench_worker",
    "bench_native",
    "bench_bundle",
    "bench_stats",
    "bench_replicas",
    "bench_watch",
    "bench_gateway",
    "bench_ray",
    "bench_rustbridge",
)
ROOT = Path(__file__).resolve().parent.parent
HEADER = ("section", "benchmark", "median", "p99", "ratio", "target", "verdict")


def table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        cells = (r.section, r.name, r.median, r.p99, r.ratio, r.target, r.verdict)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="fewer rounds; do not write docs")
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run just these")
    args = parser.parse_args()
    rows: list[Row] = []
    for name in args.only or SECTIONS:
        try:
            module = importlib.import_module(f"benchmarks.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"benchmarks.{name}":
                continue
            raise
        started = time.perf_counter()
        section_rows = module.run(quick=args.quick)
        print(f"# {name}: {time.perf_counter() - started:.1f}s", file=sys.stderr)
        rows += section_rows
    text = table(rows)
    print(text)
    if not args.quick and not args.only:
        machine = (
            f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}"
        )
        notes_path = ROOT / "docs" / "PERFORMANCE_NOTES.md"
        notes = notes_path.read_text() if notes_path.exists() else ""
        (ROOT / "docs" / "PERFORMANCE.md").write_text(
            "# Performance\n\n"
            "Produced by `python -m benchmarks` (after `pip install -e '.[dev]'`); "
            f"measured {time.strftime('%Y-%m-%d')} on {machine}.\n"
            "Medians and p99 of per-call samples; every ratio is against a baseline measured "
            "in the same run.\n\n" + text + "\n" + (f"\n{notes}" if notes else "")
        )
        print("wrote docs/PERFORMANCE.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
