"""A mutation fuzzer over the data readers (IDX, CIFAR pickle and binary, the ImageNet archive
index and JPEG decoding) and the checkpoint loader.

Run as ``python -m tests.fuzz_readers --seconds 20 --seed 0 --memory-gb 4``: it caps the
process's address space, mutates valid inputs (byte flips, truncations, insertions, 0xff runs
that inflate header claims, mutations under gzip) and feeds each to its reader. Every exception
must be one of the project's errors (:class:`bnnrobust.errors.BnnRobustError`); it prints one
JSON line: inputs tried, the error types seen, and any exception that escaped.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import resource
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np


def _bases(folder: Path) -> list[tuple[str, bytes]]:
    """Valid inputs: (reader name, file bytes)."""
    import pickle

    import torch

    from bnnrobust.models import build
    from bnnrobust.train.checkpoint import save

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 28, 28)).astype(np.uint8)
    idx = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in images.shape)
    idx += images.tobytes()
    labels = bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + bytes([1, 2, 3])
    batch = {b"batch_label": b"x", b"labels": [1, 2, 3],
             b"data": rng.integers(0, 256, (3, 3072)).astype(np.uint8),
             b"filenames": [b"a.png", b"b.png", b"c.png"]}
    records = np.concatenate([rng.integers(0, 10, (4, 1)), rng.integers(0, 256, (4, 3072))],
                             axis=1).astype(np.uint8).tobytes()
    import tarfile

    from PIL import Image

    jpeg = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (20, 24, 3)).astype(np.uint8)).save(jpeg, "JPEG")
    inner, outer = io.BytesIO(), io.BytesIO()
    for buf, members in ((inner, {"n01440764_1.JPEG": jpeg.getvalue()}), (outer, None)):
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in (members or {"n01440764.tar": inner.getvalue()}).items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    torch.manual_seed(0)
    ckpt = folder / "base.pt"
    save(build("fc-bnn", width=4, depth=1), ckpt, train_config={"epochs": 1},
         metrics={"final_test_accuracy": 0.5})
    return [("idx", idx), ("idx.gz", gzip.compress(idx)), ("idx", labels),
            ("pickle", pickle.dumps(batch, protocol=2)), ("binary", records),
            ("binary.gz", gzip.compress(records)), ("checkpoint", ckpt.read_bytes()),
            ("imagenet-train", outer.getvalue()), ("jpeg", jpeg.getvalue())]


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    kind = rng.integers(0, 6)
    if kind == 0 or len(buf) < 8:  # flip a few bytes
        for _ in range(int(rng.integers(1, 10))):
            if buf:
                buf[int(rng.integers(0, len(buf)))] = int(rng.integers(0, 256))
    elif kind == 1:  # truncate
        del buf[int(rng.integers(0, len(buf))):]
    elif kind == 2:  # insert random bytes
        at = int(rng.integers(0, len(buf)))
        buf[at:at] = rng.integers(0, 256, int(rng.integers(1, 64))).astype(np.uint8).tobytes()
    elif kind == 3:  # a run of 0xff (inflates any size or count it lands on)
        at = int(rng.integers(0, len(buf) - 4))
        buf[at:at + 4] = b"\xff\xff\xff\xff"
    elif kind == 4:  # duplicate a chunk
        a = int(rng.integers(0, len(buf)))
        b = min(len(buf), a + int(rng.integers(1, 512)))
        buf[b:b] = buf[a:b]
    else:  # small integers in a header (counts, dims, lengths)
        at = int(rng.integers(0, min(len(buf), 64)))
        buf[at] = int(rng.integers(0, 4))
    return bytes(buf)


def _call(reader: str, path: Path) -> None:
    from bnnrobust.data import imagenet, read_cifar_binary, read_cifar_pickle, read_idx
    from bnnrobust.train.checkpoint import load

    if reader.startswith("idx"):
        read_idx(path)
    elif reader == "pickle":
        read_cifar_pickle(path)
    elif reader.startswith("binary"):
        read_cifar_binary(path, records=4)
    elif reader == "imagenet-train":
        imagenet.index_train(path, ("n01440764", "n01443537"))
    elif reader == "jpeg":
        imagenet.preprocess(imagenet._decode(path.read_bytes(), str(path)), size=16, train=False)
    else:
        load(path)


def fuzz(seconds: float, seed: int) -> dict:
    """Mutate and read for ``seconds``; the counts and any escaped exception."""
    from bnnrobust.errors import BnnRobustError

    rng = np.random.default_rng(seed)
    seen: Counter[str] = Counter()
    escaped: list[str] = []
    tried = 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bases = _bases(folder)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            reader, data = bases[int(rng.integers(0, len(bases)))]
            if reader.endswith(".gz") and rng.random() < 0.5:  # mutate under the compression
                data = gzip.compress(_mutate(gzip.decompress(data), rng))
            else:
                data = _mutate(data, rng)
            suffix = ".gz" if reader.endswith(".gz") else (".pt" if reader == "checkpoint"
                                                           else ".bin")
            path = folder / f"input{suffix}"
            path.write_bytes(data)
            tried += 1
            try:
                _call(reader, path)
                seen["accepted"] += 1
            except BnnRobustError as exc:
                seen[type(exc).__name__] += 1
            except Exception as exc:  # noqa: BLE001 - what the fuzzer is looking for
                name = f"{reader}: {type(exc).__name__}: {str(exc)[:120]}"
                seen["escaped " + type(exc).__name__] += 1
                if len(escaped) < 20:
                    escaped.append(name)
    return {"tried": tried, "seen": dict(seen), "escaped": escaped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-gb", type=float, default=4.0)
    args = parser.parse_args()
    cap = int(args.memory_gb * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    print(json.dumps(fuzz(args.seconds, args.seed)))


if __name__ == "__main__":
    main()
