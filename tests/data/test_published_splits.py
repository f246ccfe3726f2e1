"""The shipped published (U2PL) semi-supervised split lists and ``--lists u2pl``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from segproto.data import build_dataset
from segproto.data.convert import make_voc_splits
from segproto.data.splits import PUBLISHED, make_cityscapes_splits, published_labelled
from segproto.tools.convert import main as convert_main

# The 18 Cityscapes train cities (cityscapesScripts' README lists them under train).
CS_TRAIN_CITIES = {"aachen", "bochum", "bremen", "cologne", "darmstadt", "dusseldorf", "erfurt", "hamburg", "hanover",
                   "jena", "krefeld", "monchengladbach", "strasbourg", "stuttgart", "tubingen", "ulm", "weimar", "zurich"}
VOC_ID = re.compile(r"20(07|08|09|10|11)_\d{6}")
CS_NAME = re.compile(r"([a-z]+)/\1_\d{6}_\d{6}")


def test_shipped_lists_have_the_protocol_sizes_and_formats():
    assert PUBLISHED["u2pl"] == {"voc": (92, 183, 366, 732, 1464), "cityscapes": (186, 372, 744, 1488)}
    # 1/16, 1/8, 1/4, 1/2 of the 1464 VOC train images and of the 2975 Cityscapes train images
    assert [-(-1464 // k) for k in (16, 8, 4, 2)] == [92, 183, 366, 732]
    assert [-(-2975 // k) for k in (16, 8, 4, 2)] == [186, 372, 744, 1488]
    voc = {n: published_labelled("voc", n) for n in PUBLISHED["u2pl"]["voc"]}
    for n, names in voc.items():
        assert len(names) == n == len(set(names)) and all(VOC_ID.fullmatch(x) for x in names), n
        assert set(names) <= set(voc[1464])  # the labelled images come from the finely annotated train set
    for n in PUBLISHED["u2pl"]["cityscapes"]:
        names = published_labelled("cityscapes", n)
        assert len(names) == n == len(set(names)) and all(CS_NAME.fullmatch(x) for x in names), n
        assert {x.split("/")[0] for x in names} <= CS_TRAIN_CITIES
    # the published order is kept (the first names of the published files)
    assert voc[92][:2] == ["2007_000733", "2010_004493"]
    assert published_labelled("cityscapes", 186)[:2] == ["hamburg/hamburg_000000_080169",
                                                         "hamburg/hamburg_000000_032719"]


def test_unknown_published_lists_are_refused():
    with pytest.raises(ValueError, match=r"no published u2pl voc split with 100 labelled images; known sizes: \[92,"):
        published_labelled("voc", 100)
    with pytest.raises(ValueError, match=r"no published split lists for source='cps', dataset='voc'; known: "):
        published_labelled("voc", 92, source="cps")


def test_voc_splits_with_the_u2pl_lists(tmp_path, capsys):
    root = tmp_path / "VOC2012"
    sets = root / "ImageSets/Segmentation"
    sets.mkdir(parents=True)
    train = published_labelled("voc", 1464)
    extra = [f"2012_{i:06d}" for i in range(5)]  # stand-ins for the SBD images of train_aug
    (sets / "train.txt").write_text("".join(f"{n}\n" for n in sorted(train)))
    (sets / "train_aug.txt").write_text("".join(f"{n}\n" for n in sorted(train + extra)))
    assert convert_main(["voc_splits", str(root), str(sets), "--lists", "u2pl"]) == 0
    assert "wrote 10 file(s)" in capsys.readouterr().out
    for n in (92, 183, 366, 732, 1464):
        lab = (sets / f"train_labeled_{n}.txt").read_text().split()
        unl = (sets / f"train_unlabeled_{n}.txt").read_text().split()
        assert lab == sorted(published_labelled("voc", n))
        assert unl == sorted(set(train + extra) - set(lab))
    # the seeded lists are other images of the same sizes
    make_voc_splits(root, tmp_path / "seeded", seed=0)
    seeded = (tmp_path / "seeded/train_labeled_92.txt").read_text().split()
    assert len(seeded) == 92 and seeded != sorted(published_labelled("voc", 92))
    # a copy whose train.txt lacks a listed image is refused, naming the file and the image
    missing = published_labelled("voc", 92)[0]
    (sets / "train.txt").write_text("".join(f"{n}\n" for n in sorted(train) if n != missing))
    with pytest.raises(ValueError) as exc:
        make_voc_splits(root, lists="u2pl")
    assert f"1 of the 92 images of the published u2pl voc split are not in {sets / 'train.txt'} (1463 images)" \
        in str(exc.value) and missing in str(exc.value)


def test_cityscapes_splits_with_the_u2pl_lists_are_read_by_the_dataset(tmp_path, capsys):
    root = tmp_path / "cs"
    listed = sorted({x for n in PUBLISHED["u2pl"]["cityscapes"] for x in published_labelled("cityscapes", n)})
    names = listed + ["zurich/zurich_999998_000019", "zurich/zurich_999999_000019"]  # + two unlisted images
    for n in names:  # empty files: the splits only list names (the dataset reads a file when indexed)
        city, stem = n.split("/")
        for sub, suffix in (("leftImg8bit", "_leftImg8bit.png"), ("gtFine", "_gtFine_labelIds.png")):
            p = root / sub / "train" / city / f"{stem}{suffix}"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.touch()
    assert convert_main(["cityscapes_splits", str(root), str(root / "splits"), "--lists", "u2pl"]) == 0
    assert "wrote 8 file(s)" in capsys.readouterr().out
    for k, n in ((16, 186), (8, 372), (4, 744), (2, 1488)):
        text = (root / f"splits/train_labeled_1-{k}.txt").read_text().splitlines()
        assert text[0].startswith("# Cityscapes train, u2pl published list: 1/") and text[1:] == sorted(
            published_labelled("cityscapes", n))
        unl = (root / f"splits/train_unlabeled_1-{k}.txt").read_text().splitlines()[1:]
        assert unl == sorted(set(names) - set(text[1:]))
    cfg = {"dataset": "cityscapes", "root": str(root), "split_file": "splits/{split}.txt"}
    lab = build_dataset(cfg, "train_labeled_1-16", False)
    assert len(lab) == 186 and sorted(lab.names) == sorted(published_labelled("cityscapes", 186))
    # a copy without one of the listed images is refused
    gone = published_labelled("cityscapes", 186)[5]
    (root / "leftImg8bit/train" / f"{gone}_leftImg8bit.png").unlink()
    with pytest.raises(ValueError, match=rf"1 of the 186 images of the published u2pl cityscapes split are not in "
                                         rf"{re.escape(str(root / 'leftImg8bit/train'))} \({len(names) - 1} images\) "
                                         rf"\(e\.g\. \['{gone}'\]\)"):
        make_cityscapes_splits(root, tmp_path / "out", lists="u2pl")
