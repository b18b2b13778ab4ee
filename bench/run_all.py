"""Run every benchmark script of bench/ one after the other and print all their tables.

`.venv/bin/python bench/run_all.py [--only ingest digest ...] [--skip ...]`

Scripts run sequentially, never together: on a small machine they would measure each other. Each one's
output (its table) is streamed as it comes; a summary of exit codes and durations ends the run. The
exit code is non-zero when any benchmark missed a target (scripts exit 1 on a FAIL row).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOT_BENCHMARKS = {"run_all", "server"}


def scripts() -> list[Path]:
    return sorted(p for p in HERE.glob("*.py") if p.stem not in NOT_BENCHMARKS and not p.stem.startswith("_"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these (file names without .py)")
    parser.add_argument("--skip", nargs="+", metavar="NAME", default=[], help="do not run these")
    args = parser.parse_args(argv)
    chosen = [p for p in scripts() if (not args.only or p.stem in args.only) and p.stem not in args.skip]
    unknown = set(args.only or ()) - {p.stem for p in scripts()}
    if unknown:
        parser.error(f"no such benchmark: {', '.join(sorted(unknown))} (have: {', '.join(p.stem for p in scripts())})")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VEILLE_")}
    summary = []
    for script in chosen:
        print(f"\n===== bench/{script.name} =====", flush=True)
        t0 = time.monotonic()
        code = subprocess.call([sys.executable, str(script)], env=env)
        summary.append((script.stem, code, time.monotonic() - t0))
    print("\n===== summary =====")
    for name, code, seconds in summary:
        print(f"{name:<12} {'ok' if code == 0 else f'exit {code}':<8} {seconds:7.1f} s")
    return 0 if all(code == 0 for _, code, _ in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
