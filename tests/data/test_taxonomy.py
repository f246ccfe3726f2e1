"""Taxonomy: loading, validation errors, composed parent maps and label mapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from segproto.data import Taxonomy, TaxonomyError, synthetic_taxonomy

# fine -> middle -> coarse, written by hand:
#   fine:   a b c d e      middle: m0 m1 m2      coarse: X Y
#   a,b -> m0 -> X ; c -> m1 -> X ; d,e -> m2 -> Y
THREE = {"levels": [
    {"name": "fine", "classes": [
        {"id": 0, "name": "a", "parent": "m0"}, {"id": 1, "name": "b", "parent": "m0"},
        {"id": 2, "name": "c", "parent": 1}, {"id": 3, "name": "d", "parent": "m2"},
        {"id": 4, "name": "e", "parent": "m2"}]},
    {"name": "middle", "classes": [
        {"id": 0, "name": "m0", "parent": "X"}, {"id": 1, "name": "m1", "parent": "X"},
        {"id": 2, "name": "m2", "parent": "Y"}]},
    {"name": "coarse", "classes": [{"id": 1, "name": "Y"}, {"id": 0, "name": "X"}]},
]}


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "tax.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_three_level_parent_maps_match_hand_table(tmp_path):
    tax = Taxonomy.from_yaml(_write(tmp_path, THREE))
    assert tax.level_names == ["fine", "middle", "coarse"]
    assert [tax.num_classes(lv) for lv in range(3)] == [5, 3, 2]
    assert tax.class_names("coarse") == ["X", "Y"]  # ordered by id, not file order
    np.testing.assert_array_equal(tax.parent_map(0, 1), [0, 0, 1, 2, 2])
    np.testing.assert_array_equal(tax.parent_map("middle", "coarse"), [0, 0, 1])
    np.testing.assert_array_equal(tax.parent_map("fine", "coarse"), [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(tax.parent_map(-1, -1), [0, 1])
    with pytest.raises(ValueError, match="coarser level"):
        tax.parent_map("coarse", "fine")


def test_map_labels_numpy_and_torch_keep_ignore_and_dtype(tmp_path):
    tax = Taxonomy.from_yaml(_write(tmp_path, THREE))
    lab = np.array([[0, 1, 2], [3, 4, 255]], np.uint8)
    want = np.array([[0, 0, 0], [1, 1, 255]], np.uint8)
    out = tax.map_labels(lab, "fine", "coarse")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, want)
    t = torch.tensor(lab, dtype=torch.int64)[None]  # [1, 2, 3]
    out_t = tax.map_labels(t, 0, 2)
    assert out_t.dtype == torch.int64 and out_t.shape == (1, 2, 3)
    assert out_t[0].tolist() == want.tolist()
    np.testing.assert_array_equal(tax.map_labels(lab, 0, 1), [[0, 0, 1], [2, 2, 255]])
    assert tax.map_labels(lab, 0, 0).tolist() == lab.tolist()


def test_map_labels_rejects_unknown_values(tmp_path):
    tax = Taxonomy.from_yaml(_write(tmp_path, THREE))
    with pytest.raises(ValueError, match=r"\[7\]"):
        tax.map_labels(np.array([0, 7, 255]), 0, 2)
    with pytest.raises(ValueError, match=r"\[-1\]"):
        tax.map_labels(torch.tensor([0, -1]), 0, 2)
    # without the check, unknown values become ignore
    assert tax.map_labels(np.array([0, 7]), 0, 2, check=False).tolist() == [0, 255]
    assert tax.map_labels(torch.tensor([3, 9]), 0, 2, check=False).tolist() == [1, 255]


def test_single_level_and_roundtrip(tmp_path):
    one = Taxonomy.from_dict({"levels": [{"name": "only", "classes": [
        {"id": 0, "name": "bg"}, {"id": 1, "name": "fg"}]}]})
    assert one.num_levels == 1 and one.num_classes() == 2
    np.testing.assert_array_equal(one.parent_map(0, 0), [0, 1])
    tax = Taxonomy.from_yaml(_write(tmp_path, THREE))
    tax.to_yaml(tmp_path / "again.yaml")
    again = Taxonomy.from_yaml(tmp_path / "again.yaml")
    for lv in range(3):
        assert again.class_names(lv) == tax.class_names(lv)
        np.testing.assert_array_equal(again.parent_map(lv, 2), tax.parent_map(lv, 2))


def _mutate(path_fn):
    data = yaml.safe_load(yaml.safe_dump(THREE))  # deep copy
    path_fn(data)
    return data


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d["levels"][0]["classes"][1].pop("parent"), "class 'b': missing 'parent'"),
    (lambda d: d["levels"][0]["classes"][1].update(parent="nope"), "parent 'nope' does not"),
    (lambda d: d["levels"][0]["classes"][1].update(parent=7), "parent id 7 does not"),
    (lambda d: d["levels"][0]["classes"][1].update(parent=["m0", "m1"]), "exactly one"),
    (lambda d: d["levels"][0]["classes"][1].update(id=0), "duplicate id 0"),
    (lambda d: d["levels"][0]["classes"][4].update(id=9), "contiguous"),
    (lambda d: d["levels"][0]["classes"][4].update(name="a"), "duplicate name 'a'"),
    (lambda d: d["levels"][2]["classes"][0].update(parent="X"), "coarsest level"),
    (lambda d: d["levels"][1]["classes"][0].update(id="0"), "id must be an integer"),
    (lambda d: d["levels"][1].pop("classes"), "levels[1]"),
])
def test_validation_errors_name_file_and_entry(tmp_path, mutate, needle):
    path = _write(tmp_path, _mutate(mutate))
    with pytest.raises(TaxonomyError) as info:
        Taxonomy.from_yaml(path)
    assert str(path) in str(info.value)
    assert needle in str(info.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.yaml"):
        Taxonomy.from_yaml(tmp_path / "nothere.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("levels: [\n")
    with pytest.raises(TaxonomyError, match="bad.yaml"):
        Taxonomy.from_yaml(bad)
    bad.write_text("just a string\n")
    with pytest.raises(TaxonomyError, match="'levels'"):
        Taxonomy.from_yaml(bad)


def test_synthetic_taxonomies_are_consistent():
    two, three = synthetic_taxonomy(2), synthetic_taxonomy(3)
    assert two.num_classes("coarse") >= 5 and two.num_classes("fine") >= 15
    assert three.level_names == ["fine", "middle", "coarse"]
    k_mid = three.num_classes("middle")
    assert two.num_classes("coarse") < k_mid < two.num_classes("fine")
    # fine -> middle -> coarse composes to the two-level map
    np.testing.assert_array_equal(three.parent_map("fine", "coarse"),
                                  two.parent_map("fine", "coarse"))
    # every coarse class has >= 1 fine class; some middle class groups >= 2 fine classes
    assert set(two.parent_map(0, 1).tolist()) == set(range(two.num_classes(1)))
    assert np.bincount(three.parent_map(0, 1)).max() >= 2
    fine = two.class_names(0)
    coarse_of = dict(zip(fine, (two.class_names(1)[p] for p in two.parent_map(0, 1))))
    assert coarse_of["parking"] == coarse_of["road"] == "flat"
    assert coarse_of["wheel"] == coarse_of["car"] == "vehicle"
    assert coarse_of["head"] == coarse_of["rider"] == "human"
