"""The readers and the checkpoint loader under a mutation fuzzer (tests/fuzz_readers.py), in a
subprocess whose address space is capped at 4 GB: nothing but the project's errors escapes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _fuzz(seconds: float, seed: int) -> dict:
    out = subprocess.run([sys.executable, "-m", "tests.fuzz_readers", "--seconds", str(seconds),
                          "--seed", str(seed), "--memory-gb", "4"], cwd=ROOT, capture_output=True,
                         text=True, timeout=seconds + 120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_fuzzed_readers_and_checkpoints_raise_only_project_errors():
    result = _fuzz(15, seed=0)
    assert result["escaped"] == [], result
    assert result["tried"] > 1000 and result["seen"].get("DatasetError", 0) > 0 \
        and result["seen"].get("CheckpointError", 0) > 0


@pytest.mark.slow
def test_fuzzed_readers_and_checkpoints_for_three_minutes():
    result = _fuzz(180, seed=1)
    assert result["escaped"] == [], result
