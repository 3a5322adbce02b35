"""The ILSVRC2012 reader on generated archives (tests/conftest.py: make_imagenet)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import bnnrobust.data.imagenet as imagenet
from bnnrobust.data import images, load, load_arrays
from bnnrobust.errors import DatasetError
from tests.conftest import FAKE_WNIDS


def test_train_index_reads_every_class_tar_and_labels_by_sorted_wnid(fake_imagenet):
    ds = images("imagenet", "train", size=32, train=False)
    assert len(ds) == 3 * 3
    expected = {w: i for i, w in enumerate(sorted(FAKE_WNIDS))}
    archive = fake_imagenet / "imagenet" / "ILSVRC2012_img_train.tar"
    want_bytes, want_labels = [], []
    with tarfile.open(archive) as outer:
        for member in outer:
            with tarfile.open(fileobj=outer.extractfile(member)) as inner:
                for image in inner:
                    want_bytes.append(inner.extractfile(image).read())
                    want_labels.append(expected[member.name[:-4]])
    assert ds.labels.tolist() == want_labels
    with open(archive, "rb") as f:
        for j, data in enumerate(want_bytes):
            f.seek(int(ds.index.offsets[j]))
            assert f.read(int(ds.index.sizes[j])) == data
    for i in range(len(ds)):  # the colour of each generated image encodes its class
        x, y = ds[i]
        assert int(x.mean((1, 2)).argmax()) == y % 3


def test_validation_labels_come_from_the_devkit_in_image_order(fake_imagenet):
    ds = images("imagenet", "test", size=32, train=False)
    position = {w: i for i, w in enumerate(sorted(FAKE_WNIDS))}
    truth = [(k - 1) % 3 + 1 for k in range(1, 7)]  # ILSVRC2012 ids written by the fixture
    assert ds.labels.tolist() == [position[FAKE_WNIDS[t - 1]] for t in truth]
    x, y = ds.batch(0, 6)
    assert x.shape == (6, 3, 32, 32) and y.tolist() == ds.labels.tolist()
    assert (x.mean((2, 3)).argmax(1) == y % 3).all()


def test_evaluation_crops_are_deterministic_8_bit_values_and_training_crops_vary(fake_imagenet):
    ev = images("imagenet", "test", size=40, train=False)
    a, b = ev[0][0], ev[0][0]
    assert a.shape == (3, 40, 40) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a * 255, (a * 255).round())
    tr = images("imagenet", "train", size=40, train=True)
    torch.manual_seed(0)
    first = [tr[i][0] for i in range(len(tr))]
    torch.manual_seed(0)
    again = [tr[i][0] for i in range(len(tr))]
    torch.manual_seed(1)
    other = [tr[i][0] for i in range(len(tr))]
    assert all(torch.equal(p, q) for p, q in zip(first, again, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(first, other, strict=True))


def test_preprocess_resizes_the_shorter_side_then_crops_the_centre():
    from PIL import Image

    pixels = np.zeros((100, 300, 3), np.uint8)
    pixels[:, 150:] = 255  # right half white
    out = imagenet.preprocess(Image.fromarray(pixels), size=256, train=False)
    assert out.shape == (3, 256, 256)
    # resized to 768×256, centre crop spans columns 256..511 of it: the half edge sits at 384
    assert out[:, :, :120].max() < 0.05 and out[:, :, 136:].min() > 0.95


def test_training_limit_is_a_seeded_subset_and_evaluation_limit_the_first_images(fake_imagenet):
    a = images("imagenet", "train", size=32, train=True, limit=4, seed=0)
    b = images("imagenet", "train", size=32, train=True, limit=4, seed=0)
    assert len(a) == 4 and a.order.tolist() == b.order.tolist()
    assert images("imagenet", "test", size=32, train=False, limit=2).order.tolist() == [0, 1]


def test_the_index_is_cached_and_keyed_by_the_files(fake_imagenet, monkeypatch):
    images("imagenet", "train", size=32, train=False)

    def fail(*args, **kwargs):
        raise AssertionError("the index was rebuilt")

    monkeypatch.setattr(imagenet, "index_train", fail)
    assert len(images("imagenet", "train", size=32, train=False)) == 9


def test_missing_files_are_named_and_never_downloaded(tmp_path, monkeypatch, fake_imagenet):
    (fake_imagenet / "imagenet" / "ILSVRC2012_img_val.tar").unlink()
    with pytest.raises(DatasetError, match="ILSVRC2012_img_val.tar.*\n(.|\n)*cannot be "
                                           "downloaded|cannot be downloaded(.|\n)*"
                                           "ILSVRC2012_img_val.tar"):
        images("imagenet", "test", size=32, train=False)


def test_a_file_that_differs_from_its_md5_is_refused(fake_imagenet):
    path = fake_imagenet / "imagenet" / "ILSVRC2012_img_train.tar"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="does not match its published md5"):
        images("imagenet", "train", size=32, train=False)


def test_imagenet_is_streamed_not_loaded_as_arrays(fake_imagenet):
    for call in (lambda: load_arrays("imagenet", "test"), lambda: load("imagenet", "test")):
        with pytest.raises(DatasetError, match="stream of images"):
            call()
    with pytest.raises(DatasetError, match="loaded as arrays"):
        images("mnist", "test", size=28, train=False)


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_a_train_archive_with_a_foreign_member_is_refused(tmp_path):
    path = tmp_path / "train.tar"
    path.write_bytes(_tar_bytes({"README.txt": b"hello"}))
    with pytest.raises(DatasetError, match="README.txt.*not the tar of one"):
        imagenet.index_train(path, tuple(sorted(FAKE_WNIDS)))


def test_a_damaged_class_tar_and_an_empty_member_are_refused(tmp_path):
    wnids = tuple(sorted(FAKE_WNIDS))
    path = tmp_path / "train.tar"
    path.write_bytes(_tar_bytes({f"{wnids[0]}.tar": b"x" * 700}))
    with pytest.raises(DatasetError, match="damaged"):
        imagenet.index_train(path, wnids)
    path.write_bytes(_tar_bytes({f"{wnids[0]}.tar": _tar_bytes({"a.JPEG": b""})}))
    with pytest.raises(DatasetError, match="has 0 bytes"):
        imagenet.index_train(path, wnids)


def test_validation_images_must_match_the_ground_truth(tmp_path):
    path = tmp_path / "val.tar"
    path.write_bytes(_tar_bytes({"ILSVRC2012_val_00000001.JPEG": b"x"}))
    wnids = tuple(sorted(FAKE_WNIDS))
    by_id = {1: FAKE_WNIDS[0], 2: FAKE_WNIDS[1]}
    with pytest.raises(DatasetError, match="holds 1 images; the devkit's ground truth lists 2"):
        imagenet.index_val(path, wnids, by_id, [1, 2])
    path.write_bytes(_tar_bytes({"ILSVRC2012_val_00000009.JPEG": b"x"}))
    with pytest.raises(DatasetError, match="not one of the 2 validation images"):
        imagenet.index_val(path, wnids, by_id, [1, 2])


def test_a_devkit_without_its_tables_and_a_corrupt_jpeg_are_clear_errors(tmp_path, fake_imagenet):
    kit = tmp_path / "kit.tar.gz"
    with tarfile.open(kit, "w:gz") as tar:
        info = tarfile.TarInfo("other.txt")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(DatasetError, match="not the ILSVRC2012 development kit"):
        imagenet.devkit_labels(kit)
    with pytest.raises(DatasetError, match="not a readable image"):
        imagenet._decode(b"not a jpeg", "somewhere")


def _figure8_small(tmp_path) -> Path:
    """panda2019/figure8 with a quick profile that fits the generated archives, 2-bit inputs
    only and no PGD column."""
    from tests.test_experiments import EXPERIMENTS

    text = (EXPERIMENTS / "panda2019" / "figure8.toml").read_text(encoding="utf-8")
    start = text.index("[profiles.quick]")
    end = text.index("[[models]]")
    text = text[:start] + ('[profiles.quick]\nepochs = 2\ntrain_limit = 9\ntest_points = 6\n'
                           'seeds = [0]\nchunk = 3\ngrid = { B = [2] }\n\n') + text[end:]
    pgd = text.index('[[attacks]]\nlabel = "PGD-40-BPDA')
    text = text[:pgd] + text[text.index("[figure]"):]
    path = tmp_path / "specs" / "panda2019" / "figure8.toml"
    path.parent.mkdir(parents=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_figure8_runs_end_to_end_on_generated_archives(tmp_path, fake_imagenet):
    """The runner trains the XNOR and full-precision ImageNet AlexNets on the streamed archive
    and measures top-5 accuracy on the streamed validation crops; the stored clean top-5 is
    what the trained model computes on those crops."""
    from bnnrobust.experiments import LocalExecutor
    from bnnrobust.experiments.measures.base import train_request, trained_model
    from bnnrobust.experiments.parse import load as load_spec
    from bnnrobust.experiments.runner import reproduce
    from bnnrobust.experiments.store import ResultStore
    from bnnrobust.report import report
    from tests.test_experiments import table_values

    spec = load_spec(_figure8_small(tmp_path))
    with ResultStore(tmp_path / "s.sqlite") as store:
        summary = reproduce(spec, profile="quick", store=store, executor=LocalExecutor(),
                            progress=False)
        assert summary.missing is None and summary.computed == summary.planned > 0
        report([spec], profile="quick", store=store, out=tmp_path / "report")
    rows = table_values(tmp_path / "report")["panda2019/figure8"][0]
    profile = spec.profile("quick")
    x, y = images("imagenet", "test", size=227, train=False).batch(0, 6)
    for plan in spec.model_plans("quick"):
        model = trained_model(train_request(plan, profile, "imagenet", 0), device="cpu",
                              data_root=None, cache_dir=None).model.eval()
        with torch.no_grad():
            top5 = (model(x).topk(5, 1).indices == y[:, None]).any(1).float().mean().item()
        cell = rows[plan.label]["clean top-5"]
        assert cell["values"] == [pytest.approx(100 * top5)]


def test_figure8_names_the_three_files_when_they_are_absent(tmp_path, monkeypatch):
    from bnnrobust.experiments.parse import load as load_spec
    from bnnrobust.experiments.runner import missing_data
    from tests.test_experiments import EXPERIMENTS

    spec = load_spec(EXPERIMENTS / "panda2019" / "figure8.toml")
    line = missing_data(spec, data_root=str(tmp_path))
    assert "\n" not in line
    for name in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar",
                 "ILSVRC2012_devkit_t12.tar.gz"):
        assert name in line
