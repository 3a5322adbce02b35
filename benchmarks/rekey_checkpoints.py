"""Copy a checkpoint cache's models under the keys the current code gives them (same weights),
so that a report computed by new code can be compared with an old one on the same checkpoints.

Usage: ``python benchmarks/rekey_checkpoints.py OLD_CACHE NEW_CACHE``: every
``OLD_CACHE/checkpoints/*.pt`` is read (its training request is in the checkpoint), the
request's key under this code is computed and the file copied to
``NEW_CACHE/checkpoints/<model>-<key>.pt``; the array cache and the verified-file list are
copied as they are.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import fields
from pathlib import Path

from bnnrobust.train import TrainRequest, load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    args = parser.parse_args()
    (args.new / "checkpoints").mkdir(parents=True, exist_ok=True)
    if (args.old / "arrays").is_dir() and not (args.new / "arrays").exists():
        shutil.copytree(args.old / "arrays", args.new / "arrays")
    if (args.old / "verified-files.json").exists():
        shutil.copy(args.old / "verified-files.json", args.new / "verified-files.json")
    names = {f.name for f in fields(TrainRequest)}
    for path in sorted((args.old / "checkpoints").glob("*.pt")):
        config = {k: v for k, v in load(path).train_config.items() if k in names}
        request = TrainRequest(**config)
        target = args.new / "checkpoints" / f"{request.model}-{request.key()}.pt"
        shutil.copy(path, target)
        print(f"{path.name} -> {target.name}")


if __name__ == "__main__":
    main()
