"""What every spec's paper profile would cost on this machine: ``reproduce --estimate`` for each
spec, from scratch (a fresh checkpoint cache and results store, no committed results, so a
row's cost is counted even where it has been run), as one Markdown table for the README.

Per spec: the training and attack time expected, the total (``≤`` where an exact attack is
bounded by its time limit), and the most expensive model row and attack column. With
``--grid VAR=VALUE`` (e.g. ``K=64``) the specs that sweep ``VAR`` are estimated on that slice
only. Run nothing else beside it: the estimate times its calibration on the spot.

    python benchmarks/paper_estimates.py                       # every spec, whole profiles
    python benchmarks/paper_estimates.py galloway2018/table4 --grid K=64 --lines
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("specs", nargs="*", help="spec names (default: every spec)")
    parser.add_argument("--profile", default="paper", help="profile (paper)")
    parser.add_argument("--grid", action="append", default=[], metavar="VAR=VALUE",
                        help="estimate only this value of a sweep variable, in the specs that "
                             "have it (repeatable)")
    parser.add_argument("--points", type=int, default=64,
                        help="test points each attack column is timed on (64; fewer for the "
                             "long attacks, e.g. Galloway Figure 2's 1,000-iteration CW curve)")
    parser.add_argument("--lines", action="store_true",
                        help="also print every line of each estimate")
    args = parser.parse_args()
    wanted: dict[str, list[str]] = {}
    for text in args.grid:
        var, _, value = text.partition("=")
        if not var or not value:
            parser.error(f"--grid {text!r}: expected VAR=VALUE, e.g. K=64")
        wanted.setdefault(var, []).append(value)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["BNNROBUST_CACHE"] = str(Path(tmp) / "cache")  # before bnnrobust reads it
        from bnnrobust.experiments.estimate import estimate, format_seconds
        from bnnrobust.experiments.parse import load
        from bnnrobust.experiments.runner import default_specs_root, resolve_specs, spec_files
        from bnnrobust.experiments.store import ResultStore

        root = default_specs_root()
        paths = resolve_specs(args.specs, root) if args.specs else spec_files(root)
        print(f"| spec | slice | training | attacks | total ({args.profile} profile) | "
              "largest row | largest column |")
        print("|---|---|---|---|---|---|---|")
        details = []
        for path in paths:
            spec = load(path)
            grid = {v: vals for v, vals in wanted.items() if v in spec.profile(args.profile).grid}
            if grid:
                spec = spec.sliced(args.profile, grid=grid)
            start = time.perf_counter()
            with ResultStore(Path(tmp) / "store.sqlite") as store:
                est = estimate(spec, args.profile, store=store, points=args.points)
            took = time.perf_counter() - start
            where = ", ".join(f"{v} = {'/'.join(vals)}" for v, vals in grid.items()) or "all"
            print(f"| {spec.name} | {where} | {_part(est, 'training')} | "
                  f"{_part(est, 'attack')} | "
                  f"{'≤ ' if est.bound else ''}{format_seconds(est.seconds)} | "
                  f"{_largest(est, 'training')} | {_largest(est, 'attack')} |", flush=True)
            details.append((spec.name, est, took))
            if est.busy:
                print(f"warning: {spec.name} was calibrated on a busy machine (load "
                      f"{est.load:.1f} per CPU): its estimate is too high.", file=sys.stderr)
        if args.lines:
            for name, est, took in details:
                print(f"\n{name} (estimated in {took:.0f} s):")
                for line in est.lines:
                    print(f"  {line.kind:8} {line.label:32} ×{line.count:<4} "
                          f"{'≤ ' if line.bound else ''}{format_seconds(line.seconds):>10}  "
                          f"{line.basis}")


def _part(est, kind: str) -> str:
    """The expected seconds of one kind of work ("training" or "attack"), formatted."""
    from bnnrobust.experiments.estimate import format_seconds

    lines = [line for line in est.lines if line.kind == kind]
    if not lines:
        return "—"
    bound = "≤ " if any(line.bound for line in lines) else ""
    return bound + format_seconds(sum(line.seconds for line in lines))


def _largest(est, kind: str) -> str:
    """The most expensive line of one kind: its label and expected time."""
    from bnnrobust.experiments.estimate import format_seconds

    lines = [line for line in est.lines if line.kind == kind]
    if not lines:
        return "—"
    top = max(lines, key=lambda line: line.seconds)
    return f"{top.label} ({'≤ ' if top.bound else ''}{format_seconds(top.seconds)})"


if __name__ == "__main__":
    main()
