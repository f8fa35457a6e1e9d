"""The program the ds topic runs in its own process: statistics over a CSV file.

    python -m topics.ds_compute --output OUT.json (--csv IN.csv | --rows N --seed S)

Reads (or first generates, reproducibly from the seed) a CSV with numeric columns and
writes per-column count, mean, standard deviation, min, median and max as JSON.
Exit code 0 on success; 2 with a message on stderr for bad input.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import statistics
import sys
from pathlib import Path


def generate(path: Path, rows: int, seed: int) -> None:
    """Write a CSV of ``rows`` rows with columns x (uniform), y (normal), z (exponential)."""
    rng = random.Random(seed)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["x", "y", "z"])
        for _ in range(rows):
            writer.writerow([f"{rng.uniform(0, 100):.6f}", f"{rng.gauss(50, 10):.6f}", f"{rng.expovariate(0.1):.6f}"])


def describe(path: Path) -> dict[str, dict[str, float]]:
    """Statistics of every numeric column of the CSV at ``path``."""
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        columns: dict[str, list[float]] = {name: [] for name in reader.fieldnames or []}
        for line, row in enumerate(reader, start=2):
            for name, value in row.items():
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    raise ValueError(f"{path}:{line}: column {name!r} is not a number: {value!r}") from None
                if not math.isfinite(number):
                    raise ValueError(f"{path}:{line}: column {name!r} is not finite: {value!r}")
                columns[name].append(number)
    if not columns or not any(columns.values()):
        raise ValueError(f"{path}: no data rows")
    return {
        name: {
            "count": len(values), "mean": statistics.fmean(values),
            "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "median": statistics.median(values), "max": max(values),
        }
        for name, values in columns.items()
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of the child process."""
    parser = argparse.ArgumentParser(prog="python -m topics.ds_compute")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--csv", type=Path)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    ns = parser.parse_args(argv)
    try:
        # The generated CSV goes next to the output: its folder must exist before either.
        ns.output.parent.mkdir(parents=True, exist_ok=True)
        source = ns.csv
        if source is None:
            if ns.rows < 1:
                raise ValueError(f"--rows must be at least 1, got {ns.rows}")
            source = ns.output.with_suffix(".csv")
            generate(source, ns.rows, ns.seed)
        stats = describe(source)
        tmp = ns.output.with_suffix(".tmp")
        tmp.write_text(json.dumps({"source": str(source), "columns": stats}, indent=2))
        tmp.replace(ns.output)
    except (OSError, ValueError) as exc:
        print(f"ds_compute: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
