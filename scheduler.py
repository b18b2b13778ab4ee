"""Run the veille scheduler daemon: `python scheduler.py --db veille.db --sources sources.yaml ...`.

The same as `veille schedule`; see `python scheduler.py --help` and docs/operations.md.
"""

from veille.schedule import main

if __name__ == "__main__":
    raise SystemExit(main())
