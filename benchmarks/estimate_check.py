"""How close ``reproduce --estimate`` comes to the run it estimates.

For each spec named (default: the demo's), in a fresh checkpoint cache and results store (temporary
folders, so nothing is taken from earlier runs): the estimate of ``--profile`` (default quick),
then the run itself in one process, timed; prints both and their ratio (the issue's target: within
a factor of 2). Run nothing else beside it: the estimate times its calibration on the spot.

    python benchmarks/estimate_check.py galloway2018/table1 panda2019/table2_mnist --profile quick
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("specs", nargs="*", default=["galloway2018/table1",
                                                     "khalil2019/solve_times",
                                                     "panda2019/table2_mnist"],
                        help="spec names (default: the demo's)")
    parser.add_argument("--profile", default="quick", help="profile (quick)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["BNNROBUST_CACHE"] = str(Path(tmp) / "cache")  # before bnnrobust reads it
        from bnnrobust.experiments import LocalExecutor
        from bnnrobust.experiments.estimate import estimate
        from bnnrobust.experiments.parse import load
        from bnnrobust.experiments.runner import default_specs_root, reproduce, resolve_specs
        from bnnrobust.experiments.store import ResultStore

        print("| spec | profile | estimate s | measured s | estimate ÷ measured |")
        print("|---|---|---|---|---|")
        for path in resolve_specs(args.specs, default_specs_root()):
            spec = load(path)
            with ResultStore(Path(tmp) / f"{spec.name.replace('/', '-')}.sqlite") as store:
                expected = estimate(spec, args.profile, store=store).seconds
                start = time.perf_counter()
                reproduce(spec, profile=args.profile, store=store, executor=LocalExecutor(),
                          progress=False)
                measured = time.perf_counter() - start
            print(f"| {spec.name} | {args.profile} | {expected:.0f} | {measured:.0f} | "
                  f"{expected / measured:.2f} |", flush=True)


if __name__ == "__main__":
    main()
