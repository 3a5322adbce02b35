"""Checkpoints: round trip, refusals of bad files, and the training cache."""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import pytest
import torch

import bnnrobust.train.cache as cache_mod
from bnnrobust.data import load
from bnnrobust.errors import CheckpointError, TrainingError
from bnnrobust.models import build
from bnnrobust.train import TrainRequest, fit, save, train_cached
from bnnrobust.train import load as load_checkpoint


@pytest.mark.parametrize(("name", "params"), [
    ("galloway-cnn", {"precision": "scaled", "width": 8}),
    ("fc-bnn", {"depth": 2, "width": 32}),
    ("fcn", {"width": 16, "input_bits": 2}),
])
def test_round_trip_identical_logits(fake_mnist, tmp_path, name, params):
    torch.manual_seed(0)
    model = build(name, **params)
    fit(model, load("mnist", "train", limit=64), epochs=1, batch_size=16, progress=False)
    path = save(model, tmp_path / "m.pt", train_config={"epochs": 1}, metrics={"acc": 0.5})
    ckpt = load_checkpoint(path)
    x, _ = load("mnist", "test", limit=16)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), ckpt.model(x))
    assert ckpt.model.config == model.config and not ckpt.model.training
    assert ckpt.train_config == {"epochs": 1} and ckpt.metrics == {"acc": 0.5}
    assert ckpt.versions["torch"] == torch.__version__


def _saved(tmp_path):
    return save(build("fc-bnn", width=8), tmp_path / "m.pt")


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_file(tmp_path):
    path = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupt, another kind of file"):
        load_checkpoint(path)


def test_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(1000))
    with pytest.raises(CheckpointError, match="not a readable bnnrobust checkpoint"):
        load_checkpoint(junk)
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, plain)
    with pytest.raises(CheckpointError, match="no 'bnnrobust-checkpoint' marker"):
        load_checkpoint(plain)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/bnnrobust-ckpt-pwned",))


def test_code_in_a_checkpoint_is_never_run(tmp_path):
    path = tmp_path / "evil.pt"
    buf = io.BytesIO()
    torch.save({"format": "bnnrobust-checkpoint"}, buf)
    # replace the pickle inside the zip container by one that would run a command
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("data.pkl"):
                data = pickle.dumps({"format": _Evil()}, protocol=2)
            dst.writestr(item, data)
    with pytest.raises(CheckpointError, match="not plain data"):
        load_checkpoint(path)
    assert not os.path.exists("/tmp/bnnrobust-ckpt-pwned")


def test_another_architecture(tmp_path):
    path = _saved(tmp_path)
    with pytest.raises(CheckpointError, match="holds a 'fc-bnn' model, but a 'galloway-cnn'"):
        load_checkpoint(path, expected_model="galloway-cnn")


def test_weights_that_do_not_fit_the_named_model(tmp_path):
    path = _saved(tmp_path)
    payload = torch.load(path, weights_only=True)
    payload["model"] = payload["model"].replace('"width": 8', '"width": 9')
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_checkpoint(path)


def test_save_refuses_non_zoo_models(tmp_path):
    with pytest.raises(CheckpointError, match="bnnrobust.models.build"):
        save(torch.nn.Linear(2, 2), tmp_path / "x.pt")


def test_cache_hit_skips_training(fake_mnist, monkeypatch, tmp_path):
    request = TrainRequest("fc-bnn", {"width": 16}, "mnist", epochs=1, train_limit=100)
    first = train_cached(request, progress=False, cache_dir=tmp_path / "ckpts")
    assert not first.hit and first.path.exists()

    def no_training(*args, **kwargs):
        raise AssertionError("trained again although the request is cached")

    monkeypatch.setattr(cache_mod, "fit", no_training)
    second = train_cached(request, progress=False, cache_dir=tmp_path / "ckpts")
    assert second.hit and second.path == first.path
    x, _ = load("mnist", "test", limit=8)
    with torch.no_grad():
        assert torch.equal(first.model.eval()(x), second.model(x))
    # any change that determines the weights is another key
    assert TrainRequest("fc-bnn", {"width": 16}, "mnist", epochs=2, train_limit=100).key() \
        != request.key()
    assert TrainRequest("fc-bnn", {"width": 16, "depth": 2}, "mnist", epochs=1,
                        train_limit=100).key() == request.key()  # defaults are resolved


def test_damaged_cache_entry_is_retrained(fake_mnist, tmp_path):
    request = TrainRequest("fc-bnn", {"width": 16}, "mnist", epochs=1, train_limit=50)
    first = train_cached(request, progress=False, cache_dir=tmp_path / "c")
    first.path.write_bytes(b"broken")
    again = train_cached(request, progress=False, cache_dir=tmp_path / "c")
    assert not again.hit and load_checkpoint(again.path).model is not None


def test_hook_must_match_request(fake_mnist):
    class Hook:
        def __call__(self, model, x, y, *, epoch):
            return [(x, y)]

        def config(self):
            return {"kind": "x"}

    with pytest.raises(TrainingError, match="config"):
        train_cached(TrainRequest("fc-bnn", {}, "mnist", epochs=1), batch_hook=Hook(),
                     progress=False)


def _edited(tmp_path, **changes):
    """A saved fc-bnn checkpoint with payload fields replaced."""
    from bnnrobust.train.checkpoint import save as save_ckpt

    torch.manual_seed(0)
    path = save_ckpt(build("fc-bnn", width=8, depth=1), tmp_path / "ok.pt")
    payload = torch.load(path, weights_only=True)
    for key, value in changes.items():
        payload[key] = value(payload) if callable(value) else value
    out = tmp_path / "edited.pt"
    torch.save(payload, out)
    return out


def test_a_header_claiming_a_huge_model_is_refused_before_anything_is_built(tmp_path):
    import json
    import resource

    from bnnrobust.train.checkpoint import load as load_ckpt

    def huge(payload):
        config = json.loads(payload["model"])
        config["params"]["width"] = 1_000_000
        return json.dumps(config)

    path = _edited(tmp_path, model=huge)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match="do not fit .*shape mismatch"):
        load_ckpt(path)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200  # building the claim for real would take about 3 GB


@pytest.mark.parametrize(("changes", "message"), [
    ({"model": lambda p: p["model"].replace('"params": {', '"params": [{').replace("}}", "}]}")},
     "must name a model and a dict of parameters"),
    ({"metrics": "{not json"}, "'metrics' field is not valid JSON"),
    ({"train_config": 7}, "'train_config' field must be a JSON object"),
    ({"state_dict": lambda p: list(p["state_dict"].values())}, "has no weights"),
    ({"state_dict": lambda p: {k: (v.fill_(float("nan")) if v.is_floating_point() else v)
                               for k, v in p["state_dict"].items()}}, "NaN or infinite"),
    ({"state_dict": lambda p: {k: v.to(torch.int32) if v.is_floating_point() else v
                               for k, v in p["state_dict"].items()}}, "dtype mismatch"),
])
def test_edited_checkpoint_fields_are_checkpoint_errors(tmp_path, changes, message):
    from bnnrobust.train.checkpoint import load as load_ckpt

    with pytest.raises(CheckpointError, match=message):
        load_ckpt(_edited(tmp_path, **changes))


def test_the_cache_key_carries_the_identity_of_the_training_data(tmp_path, monkeypatch):
    """A model trained on (unverifiable) CIFAR-10 binary batches is keyed by their content: other
    files, or no files at all, give another key; md5-checked data is keyed by its md5s."""
    from dataclasses import replace

    import numpy as np

    from bnnrobust.data import identity
    from bnnrobust.data.registry import CIFAR10, REGISTRY
    from bnnrobust.train import TrainRequest

    monkeypatch.setitem(REGISTRY, "cifar10", replace(CIFAR10, binary_records=2))
    root = tmp_path / "root"
    request = TrainRequest("fc-bnn", {"width": 8, "in_features": 3072}, "cifar10", epochs=1)
    no_files = request.key(data_root=root)
    assert identity("cifar10", root=root) == tuple(f"{f.name}:{f.md5}"
                                                    for f in CIFAR10.splits["train"])
    folder = root / "cifar10" / CIFAR10.binary_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        (folder / f"data_batch_{i}.bin").write_bytes(
            np.concatenate([rng.integers(0, 10, (2, 1)), rng.integers(0, 256, (2, 3072))],
                           axis=1).astype(np.uint8).tobytes())
    fake = request.key(data_root=root)
    (folder / "data_batch_3.bin").write_bytes(bytes(2 * 3073))
    other = request.key(data_root=root)
    assert len({no_files, fake, other}) == 3
    mnist = TrainRequest("fc-bnn", {"width": 8}, "mnist", epochs=1)
    assert mnist.as_dict()["data"][0] == "train-images-idx3-ubyte.gz:f68b3c2dcbeaaa9fbdd348bbdeb94873"
