"""Before/after: run the benchmarks of two versions of plugbridge, alternating, in one session.

python -m benchmarks.compare BEFORE_REF [--rounds 2] [--only bench_inprocess] [--quick]

``BEFORE_REF`` is a git revision; it is checked out into a temporary worktree (removed at the
end) and run with its own ``src`` first on ``sys.path``; the working tree is "after". Each
round runs before, then after, each in a fresh interpreter, so both see the same machine
state; the table gives the median over rounds of each row's median and the after/before
ratio (a ratio above 1 means slower, or for throughput rows, faster).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from .__main__ import SECTIONS

ROOT = Path(__file__).resolve().parent.parent
_NUMBER = re.compile(r"([\d,]+(?:\.\d+)?)\s*(µs|ms|s|MiB|calls/s)")


def run_tree(tree: Path, sections: list[str], quick: bool) -> dict[tuple[str, str], str]:
    """The benchmark table of the plugbridge in ``tree``: (section, name) → median cell."""
    command = [sys.executable, "-m", "benchmarks"]
    if quick:
        command.append("--quick")
    for section in sections:
        command += ["--only", section]
    env = dict(os.environ, PYTHONPATH=str(tree / "src") + os.pathsep + str(tree))
    done = subprocess.run(
        command, cwd=tree, env=env, capture_output=True, text=True, check=True, timeout=3600
    )
    rows: dict[tuple[str, str], str] = {}
    for line in done.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0] not in ("section", "") and not cells[0].startswith("-"):
            rows[(cells[0], cells[1])] = cells[2]
    return rows


def value(cell: str) -> tuple[float, str] | None:
    found = _NUMBER.search(cell)
    if found is None:
        return None
    return float(found.group(1).replace(",", "")), found.group(2)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare")
    parser.add_argument("before", help="git revision to compare against")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", choices=SECTIONS, action="append")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sections = args.only or list(SECTIONS)
    with tempfile.TemporaryDirectory(prefix="plugbridge-before-") as scratch:
        before = Path(scratch) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(before), args.before],
            cwd=ROOT, check=True, capture_output=True,
        )  # fmt: skip
        try:
            results: dict[str, list[dict[tuple[str, str], str]]] = {"before": [], "after": []}
            for n in range(args.rounds):
                for label, tree in (("before", before), ("after", ROOT)):
                    print(f"# round {n + 1}: {label}", file=sys.stderr)
                    results[label].append(run_tree(tree, sections, args.quick))
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(before)],
                cwd=ROOT, check=False, capture_output=True,
            )  # fmt: skip
    print(f"| benchmark | before ({args.before}) | after | after/before |")
    print("|---|---|---|---|")
    for key in results["after"][0]:
        cells = {}
        for label in ("before", "after"):
            values = [v for r in results[label] if (v := value(r.get(key, ""))) is not None]
            cells[label] = (
                (statistics.median(x for x, _ in values), values[0][1]) if values else None
            )
        b, a = cells["before"], cells["after"]
        shown_b = f"{b[0]:,.2f} {b[1]}" if b else "–"
        shown_a = f"{a[0]:,.2f} {a[1]}" if a else "–"
        change = f"{a[0] / b[0]:.2f}×" if a and b and b[0] else ""
        print(f"| {key[0]}: {key[1]} | {shown_b} | {shown_a} | {change} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
