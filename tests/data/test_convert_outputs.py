"""The convert command never replaces a file that holds something else without --force; a rerun is a no-op."""

import numpy as np
import pytest
from PIL import Image

from segproto.data.datasets import convert_common
from segproto.tools.convert import main as convert_main


@pytest.fixture
def replace_off():
    convert_common.allow_replace(False)
    yield
    convert_common.allow_replace(True)  # the Python API's default


def _cityscapes(root, n=2):
    for i in range(n):
        d = root / "gtFine" / "train" / "aachen"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 6), 7 + i, np.uint8), "L").save(d / f"aachen_{i:06d}_000019_gtFine_labelIds.png")
    return root


def test_rerun_is_a_no_op_and_other_content_needs_force(tmp_path, replace_off, capsys):
    src = _cityscapes(tmp_path / "cs")
    out = tmp_path / "out"
    assert convert_main(["cityscapes", str(src), str(out)]) == 0
    made = sorted(out.rglob("*_labelTrainIds.png"))
    assert len(made) == 2 and np.array_equal(np.array(Image.open(made[0])), np.full((4, 6), 0))  # road: 7 -> 0
    stamp = made[0].stat().st_mtime_ns
    assert convert_main(["cityscapes", str(src), str(out)]) == 0  # same content: left as it is
    assert made[0].stat().st_mtime_ns == stamp

    made[1].write_bytes(b"the user's own file")
    with pytest.raises(SystemExit) as exc:
        convert_main(["cityscapes", str(src), str(out)])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(made[1]) in err[0] and "--force" in err[0]
    assert made[1].read_bytes() == b"the user's own file"  # nothing replaced

    assert convert_main(["cityscapes", str(src), str(out), "--force"]) == 0
    assert np.array_equal(np.array(Image.open(made[1])), np.full((4, 6), 1))  # 8 (sidewalk) -> 1


def test_write_file_and_link_to(tmp_path, replace_off):
    p = tmp_path / "a" / "b.txt"
    convert_common.write_file(p, b"x")
    convert_common.write_file(p, b"x")
    with pytest.raises(FileExistsError, match=r"b.txt already exists with other content; pass --force"):
        convert_common.write_file(p, b"y")
    assert p.read_bytes() == b"x" and sorted(q.name for q in p.parent.iterdir()) == ["b.txt"]  # no temp file left
    target, link = tmp_path / "t.jpg", tmp_path / "l" / "t.jpg"
    target.write_bytes(b"img")
    convert_common.link_to(link, target)
    convert_common.link_to(link, target)  # an existing link to the same target is kept
    other = tmp_path / "o.jpg"
    other.write_bytes(b"other")
    with pytest.raises(FileExistsError, match="l/t.jpg already exists"):
        convert_common.link_to(link, other)
    convert_common.allow_replace(True)
    convert_common.write_file(p, b"y")
    convert_common.link_to(link, other)
    assert p.read_bytes() == b"y" and link.resolve() == other.resolve()


def test_the_command_leaves_the_python_api_replacing(tmp_path, capsys):
    src = _cityscapes(tmp_path / "cs", n=1)
    out = tmp_path / "out"
    assert convert_main(["cityscapes", str(src), str(out)]) == 0
    assert convert_common._REPLACE is True
    path = next(out.rglob("*_labelTrainIds.png"))
    convert_common.write_file(path, b"replaced by an API call")
    assert path.read_bytes() == b"replaced by an API call"


def test_coco20i_keeps_a_real_image_folder_at_img_dir(tmp_path):
    """A real folder of images where the converter would link them is the user's copy: kept."""
    from tests.data.test_coco20i_convert import H, W, image, write_coco

    src, dst = tmp_path / "coco", tmp_path / "coco20i"
    write_coco(src, "train2014", [image(1)], [])
    (src / "train2014").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(src / "train2014" / "COCO_train2014_000000000001.jpg")
    own = dst / "img_dir" / "train2014"
    own.mkdir(parents=True)
    (own / "mine.jpg").write_bytes(b"user's image")
    assert convert_main(["coco20i", str(src), str(dst)]) == 0
    assert not own.is_symlink() and (own / "mine.jpg").read_bytes() == b"user's image"
