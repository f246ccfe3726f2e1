"""Space files: every bad key, distribution or value fails before any trial, naming the key. No Ray."""

import sys

import numpy as np
import pytest

from search.space import Param, SearchSpace, apply_params, first_rung_problems, load_space
from segproto.config import ConfigError, config_to_dict, load_config
from tests.engine.conftest import REPO


def _errors(path) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_space(path)
    return exc.value.errors


def test_parses_every_distribution(write_space):
    space = load_space(write_space({
        "loss.contrast.temperature": {"loguniform": [0.03, 0.5]},
        "optim.lr": {"uniform": [0.001, 0.1]},
        "loss.contrast.memory_size": {"quniform": [250, 1000, 250]},
        "sched.power": {"quniform": [0.5, 1.0, 0.25]},
        "loss.contrast.hard_k": {"randint": [64, 512]},
        "loss.contrast.sampling": {"choice": ["all", "hardest"]},
    }))
    assert space.keys == ["loss.contrast.temperature", "optim.lr", "loss.contrast.memory_size", "sched.power",
                          "loss.contrast.hard_k", "loss.contrast.sampling"]
    by_key = {p.key: p for p in space.params}
    assert by_key["loss.contrast.memory_size"].integer and not by_key["sched.power"].integer
    assert by_key["loss.contrast.sampling"].edge_values() == ["all", "hardest"]
    assert by_key["loss.contrast.hard_k"].edge_values() == [64, 512]


def test_unknown_key_is_named_with_a_suggestion(write_space):
    path = write_space({"loss.contrast.temprature": {"loguniform": [0.03, 0.5]}})
    [err] = _errors(path)
    assert err.startswith(f"{path}: ")
    assert "unknown key 'loss.contrast.temprature'" in err and "did you mean 'loss.contrast.temperature'" in err


def test_unknown_distribution_is_named_with_the_key(write_space):
    [err] = _errors(write_space({"loss.hiposeg.tau": {"logunifrom": [0.03, 0.5]}}))
    assert "key 'loss.hiposeg.tau'" in err and "unknown distribution 'logunifrom'" in err
    assert "did you mean 'loguniform'" in err and "supported: uniform, loguniform, quniform, randint, choice" in err


@pytest.mark.parametrize("spec, message", [
    ({"loguniform": [0.0, 0.5]}, "low must be > 0"),
    ({"uniform": [0.5, 0.1]}, "low must be < high"),
    ({"uniform": [0.1]}, "needs 2 finite numbers"),
    ({"uniform": ["a", 1]}, "needs 2 finite numbers"),
    ({"quniform": [0.1, 0.5, 0.3]}, "multiple of q"),
    ({"quniform": [0.1, 0.5, 0]}, "q must be > 0"),
    ({"randint": [1.5, 4]}, "bounds must be integers"),
    ({"choice": []}, "not a non-empty list"),
    ({"choice": [[64, 64], [96, 96]]}, "items must be null, bool, number or string"),
    ({"choice": [0.1, 0.1]}, "duplicate items"),
    (0.1, "expected one {distribution: arguments} mapping"),
    ({"uniform": [0, 1], "loguniform": [0.1, 1]}, "expected one {distribution: arguments} mapping"),
])
def test_bad_arguments_are_named(write_space, spec, message):
    [err] = _errors(write_space({"loss.contrast.temperature": spec}))
    assert "key 'loss.contrast.temperature'" in err and message in err


def test_int_keys_need_integer_distributions(write_space):
    errs = _errors(write_space({"loss.contrast.memory_size": {"uniform": [100, 1000]},
                                "loss.contrast.hard_k": {"quniform": [64, 512, 0.5]}}))
    assert len(errs) == 2  # every problem at once
    assert "key 'loss.contrast.memory_size'" in errs[0] and "use randint, quniform or choice" in errs[0]
    assert "key 'loss.contrast.hard_k'" in errs[1] and "must be integers" in errs[1]


def test_sections_and_empty_files_are_rejected(write_space):
    [err] = _errors(write_space({"loss.contrast": {"choice": [1, 2]}}))
    assert "key 'loss.contrast' is a section" in err
    [err] = _errors(write_space("", name="empty.yaml"))
    assert "no parameters" in err


def test_values_the_schema_rejects_fail_before_a_trial(write_space):
    path = write_space({"loss.hiposeg.momentum": {"uniform": [0.5, 1.5]},
                        "loss.contrast.sampling": {"choice": ["all", "hardst"]},
                        "loss.contrast.temperature": {"loguniform": [0.03, 0.5]}})
    base = config_to_dict(load_config(REPO / "configs/quickstart.yaml"))
    with pytest.raises(ConfigError) as exc:
        load_space(path).check_against(base)
    errs = exc.value.errors
    assert len(errs) == 2
    assert f"{path} (uniform value 1.5)" in errs[0] and "key 'loss.hiposeg.momentum' must be <= 1, got 1.5" in errs[0]
    assert "key 'loss.contrast.sampling'" in errs[1] and "'hardst'" in errs[1] and "did you mean 'hardest'" in errs[1]


@pytest.mark.parametrize("space, config", [("pico", "configs/pico/quickstart.yaml"),
                                           ("hiposeg", "configs/hiposeg/quickstart.yaml"),
                                           ("prcl", "configs/prcl/quickstart.yaml"),
                                           ("pretrained128_pico", "configs/pretrained128/pico.yaml")])
def test_shipped_spaces_are_valid(space, config):
    loaded = load_space(REPO / f"search/spaces/{space}.yaml")
    loaded.check_against(config_to_dict(load_config(REPO / config)))
    sections = {"pico": ("loss.contrast.",), "hiposeg": ("loss.hiposeg.",), "prcl": ("loss.prcl.", "semi."),
                "pretrained128_pico": ("loss.contrast.",)}[space]
    assert all(k.startswith(sections) for k in loaded.keys)


def test_apply_params_sets_plain_python_values():
    base = {"loss": {"contrast": {"temperature": 0.1}}, "train": {"iters": 10}}
    out = apply_params(base, {"loss.contrast.temperature": np.float64(0.2), "loss.contrast.memory_size": np.int64(7)})
    assert out["loss"]["contrast"] == {"temperature": 0.2, "memory_size": 7}
    assert type(out["loss"]["contrast"]["memory_size"]) is int
    assert base["loss"]["contrast"] == {"temperature": 0.1}  # the base is not modified


def test_cli_rejects_a_bad_space_before_starting_ray(write_cfg, write_space, tmp_path, capsys):
    from search.sweep import main

    space = write_space({"loss.contrast.temprature": {"loguniform": [0.03, 0.5]}})
    rc = main([str(write_cfg()), "--space", str(space), "--num-samples", "2", "--work-dir", str(tmp_path / "sweep")])
    assert rc == 2
    assert "unknown key 'loss.contrast.temprature'" in capsys.readouterr().err
    ray = sys.modules.get("ray")  # imported by other tests at collection, or None when blocked
    assert ray is None or not ray.is_initialized()
    assert not (tmp_path / "sweep").exists()


# ASHA's first rung against the iterations at which the method's terms switch on; every expected
# rung and start below is worked out by hand from the arguments.
def _base(method: str, iters: int, every: int, **sections) -> dict:
    return {"method": {"name": method}, "train": {"iters": iters, "eval_interval": every}, "loss": sections}


PICO_SPACE = SearchSpace("s.yaml", (Param("loss.contrast.warmup_iters", "quniform", (0, 750, 125), True),
                                    Param("loss.contrast.weight", "loguniform", (0.01, 0.5))))
HIPO_SPACE = SearchSpace("h.yaml", (Param("loss.hiposeg.coarse_start", "uniform", (0.0, 0.15)),
                                    Param("loss.hiposeg.fine_start", "uniform", (0.15, 0.3)),
                                    Param("loss.hiposeg.align_start", "uniform", (0.3, 0.5))))


@pytest.mark.parametrize("grace, rung, fails", [
    (500, 500, True),     # warm-ups 500..750 reach the rung with no contrast: tie-break
    (600, 1000, False),   # the rung is the first evaluation at or after 600
    (1000, 1000, False),
    (1400, 1500, False),  # the next evaluation is capped at train.iters
])
def test_first_rung_must_follow_the_latest_swept_warmup(grace, rung, fails):
    errors, warnings = first_rung_problems(PICO_SPACE, _base("pico", 1500, 500, contrast={"warmup_iters": 188}),
                                           grace)
    assert warnings == []
    if fails:
        [err] = errors
        assert f"first rung (iteration {rung}, from --grace-period {grace}" in err
        assert "loss.contrast.warmup_iters reaches iteration 750 in s.yaml" in err
    else:
        assert errors == []


@pytest.mark.parametrize("warmup, fails", [(4000, True), (3999, False), (5000, True)])
def test_unswept_warmup_of_the_config_counts_too(warmup, fails):
    # A term is 0 up to and including its warm-up iteration, so warm-up 4000 is off at rung 4000.
    space = SearchSpace("s.yaml", (Param("loss.contrast.temperature", "loguniform", (0.03, 0.5)),))
    errors, _ = first_rung_problems(space, _base("pico", 40000, 4000, contrast={"warmup_iters": warmup}), 4000)
    assert bool(errors) == fails
    if fails:
        assert f"loss.contrast.warmup_iters reaches iteration {warmup} in the config" in errors[0]


def test_hiposeg_stage_starts_are_fractions_of_the_run():
    base = _base("hiposeg", 1500, 250, hiposeg={"coarse_start": 0.075, "fine_start": 0.225, "align_start": 0.375})
    # latest starts: coarse floor(0.15 * 1500) = 225, fine 450, align 750; coarse is on by rung 250
    errors, warnings = first_rung_problems(HIPO_SPACE, base, 250)
    assert errors == []
    assert [w.split(" can start at iteration ")[0] for w in warnings] == ["loss.hiposeg.fine_start",
                                                                          "loss.hiposeg.align_start"]
    assert "iteration 450 (in h.yaml)" in warnings[0] and "iteration 750 (in h.yaml)" in warnings[1]
    assert first_rung_problems(HIPO_SPACE, base, 751) == ([], [])
    # every term can still be off at rung 250 once the coarse start reaches 0.2 (iteration 300)
    late = SearchSpace("h.yaml", (Param("loss.hiposeg.coarse_start", "uniform", (0.0, 0.2)),) + HIPO_SPACE.params[1:])
    [err] = first_rung_problems(late, base, 250)[0]
    assert "loss.hiposeg.coarse_start reaches iteration 300 in h.yaml" in err


@pytest.mark.parametrize("method", ["ce", "prcl", "mean_teacher", "hdmnet"])
def test_methods_without_a_term_start_pass(method):
    assert first_rung_problems(PICO_SPACE, _base(method, 1500, 500), 500) == ([], [])
