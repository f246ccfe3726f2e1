"""``convert coco20i``: COCO 2014 instance annotations -> 81-label masks, against hand tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segproto.data import DatasetError, build_dataset
from segproto.data.fewshot import COCO_CLASSES
from segproto.tools.convert import main as convert_main

mask_utils = pytest.importorskip("pycocotools.mask")
convert_coco20i = pytest.importorskip("segproto.data.convert").convert_coco20i

REPO = Path(__file__).resolve().parents[2]
# COCO's 80 category ids: 1..90 without the ten ids the 2014 release never used.
COCO_IDS = [i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]
H, W = 3, 4


def categories():
    return [{"id": i, "name": n, "supercategory": "x"} for i, n in zip(COCO_IDS, COCO_CLASSES)]


def write_coco(root: Path, subset: str, images, annotations, cats=None) -> Path:
    path = root / "annotations" / f"instances_{subset}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": categories() if cats is None else cats}))
    return path


def image(i: int, subset: str = "train2014", h: int = H, w: int = W) -> dict:
    return {"id": i, "file_name": f"COCO_{subset}_{i:012d}.jpg", "height": h, "width": w}


def test_masks_hand_table(tmp_path, capsys):
    src, dst = tmp_path / "coco", tmp_path / "coco20i"
    # image 1: a crowd person region as uncompressed RLE (column-major counts, zeros first):
    # [4, 2, 6] -> pixels 4, 5 of the column-major order = (row 1, col 1), (row 2, col 1);
    # then a dog (COCO id 18 -> label 17) as compressed RLE over column 1..2 of row 2: it is later,
    # so it wins at (2, 1).
    dog = np.zeros((H, W), np.uint8)
    dog[2, 1:3] = 1
    dog_rle = mask_utils.encode(np.asfortranarray(dog))
    dog_rle["counts"] = dog_rle["counts"].decode()
    anns = [{"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 1,
             "segmentation": {"size": [H, W], "counts": [4, 2, 6]}},
            {"id": 11, "image_id": 1, "category_id": 18, "iscrowd": 0, "segmentation": dog_rle},
            # image 3: a polygon (toothbrush, COCO id 90 -> label 80)
            {"id": 12, "image_id": 3, "category_id": 90, "iscrowd": 0,
             "segmentation": [[0.5, 0.5, 3.5, 0.5, 3.5, 2.5, 0.5, 2.5]]}]
    ann_file = write_coco(src, "train2014", [image(1), image(2), image(3)], anns)
    for i in (1, 2, 3):  # the images, so img_dir is linked
        p = src / "train2014" / f"COCO_train2014_{i:012d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((H, W, 3), 40 * i, np.uint8)).save(p)
    assert convert_main(["coco20i", str(src), str(dst)]) == 0
    assert "wrote 3 file(s)" in capsys.readouterr().out
    got = {i: np.asarray(Image.open(dst / f"ann_dir/train2014/COCO_train2014_{i:012d}.png")) for i in (1, 2, 3)}
    assert got[1].tolist() == [[0, 0, 0, 0],
                               [0, 1, 0, 0],
                               [0, 17, 17, 0]]
    assert got[2].tolist() == np.zeros((H, W)).tolist()
    from pycocotools.coco import COCO  # the official API's own rasterisation of the polygon

    ref = COCO(str(ann_file)).annToMask(anns[2])
    assert ref.any() and got[3].tolist() == (ref * 80).tolist()
    assert COCO_CLASSES[16] == "dog" and COCO_CLASSES[79] == "toothbrush"
    assert (dst / "img_dir/train2014").is_symlink()
    # the COCO-20i config's folder dataset reads them (label 17 is `dog`, 0 background)
    from segproto.config import load_config
    from segproto.engine.builder import data_dict

    cfg = load_config(REPO / "configs/hdmnet/coco20i_r50.yaml")
    ds = build_dataset({**data_dict(cfg), "root": str(dst)}, "train2014", False)
    assert len(ds) == 3 and ds.classes[17] == "dog" and ds.load(0)[1].tolist() == got[1].tolist()


def test_errors_name_the_file_and_value(tmp_path):
    src = tmp_path / "coco"
    with pytest.raises(FileNotFoundError, match=r"no instance annotations under .*instances_train2014\.json"):
        convert_coco20i(src, tmp_path / "out")
    path = write_coco(src, "val2014", [image(1, "val2014")], [], cats=categories()[:79])
    with pytest.raises(DatasetError, match=rf"{path}: categories .* \(79\) are not the 80 COCO categories"):
        convert_coco20i(src, tmp_path / "out")
    write_coco(src, "val2014", [image(1, "val2014")],
               [{"id": 7, "image_id": 1, "category_id": 12, "segmentation": [[0, 0, 1, 0, 1, 1]]}])
    with pytest.raises(DatasetError, match=r"annotation 7 has category_id 12, not one of the 80 categories"):
        convert_coco20i(src, tmp_path / "out")
    write_coco(src, "val2014", [image(1, "val2014")],
               [{"id": 8, "image_id": 5, "category_id": 1, "segmentation": [[0, 0, 1, 0, 1, 1]]}])
    with pytest.raises(DatasetError, match=r"annotation 8 refers to image_id 5"):
        convert_coco20i(src, tmp_path / "out")
