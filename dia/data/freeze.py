"""Freeze a prepared dataset's split: ``python -m dia.data.freeze MANIFEST DEST``.

Writes the frozen split manifest (path, sha256, raw label, split) that config/splits/ commits, from
a manifest prepared without one. Point the dataset's ``split.frozen`` option at DEST afterwards so
every later prepare checks the local files against it.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from dia.data.splits import write_frozen
from dia.errors import DiaError


def freeze(manifest: Path, dest: Path) -> int:
    """Write ``dest`` from ``manifest``; return the number of images frozen."""
    if not Path(manifest).is_file():
        raise DiaError(f"{manifest} not found; run the prepare step for the dataset first")
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    write_frozen(
        dest,
        [r["path"] for r in rows],
        [r["sha256"] for r in rows],
        [r["raw_label"] for r in rows],
        [r["split"] for r in rows],
    )
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", type=Path, help="results/data/<dataset>/manifest.csv")
    parser.add_argument("dest", type=Path, help="config/splits/<dataset>.csv")
    args = parser.parse_args(argv)
    try:
        n = freeze(args.manifest, args.dest)
    except DiaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"froze the split of {n} images into {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
