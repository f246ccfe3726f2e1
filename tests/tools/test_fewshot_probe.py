"""scripts/fewshot_probe.py: the AUC against hand-counted pairs, and its input checks."""

import importlib.util
import math
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("fewshot_probe", REPO / "scripts" / "fewshot_probe.py")
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)


def test_auc_counts_pairs_and_half_ties():
    score = np.array([0.9, 0.4, 0.4, 0.1, 0.7])
    pos = np.array([True, True, False, False, False])
    # pairs (pos, neg): 0.9 beats 0.4, 0.1, 0.7 -> 3; 0.4 ties 0.4 (1/2), beats 0.1, loses to 0.7 -> 1.5
    assert math.isclose(probe.auc(score, pos), 4.5 / 6)
    assert probe.auc(np.array([0.2, 0.8]), np.array([False, True])) == 1.0
    assert probe.auc(np.array([0.2, 0.8]), np.array([True, False])) == 0.0
    assert math.isnan(probe.auc(np.array([0.2, 0.8]), np.array([True, True])))


def test_missing_run_dir_is_a_clear_error(tmp_path, capsys):
    assert probe.main([str(tmp_path / "nope")]) == 2
    assert "config.yaml not found" in capsys.readouterr().err
