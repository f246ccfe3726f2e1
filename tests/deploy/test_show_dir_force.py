"""python -m segproto.test --show-dir does not write over pictures already there unless --force."""

from segproto.test import main as run_test


def test_show_dir_pictures_need_force_to_be_replaced(data_ckpt, tmp_path, capsys):
    cfg, ckpt = data_ckpt
    show = tmp_path / "show"
    args = [str(cfg), str(ckpt), "--show-dir", str(show), "--split", "val"]
    assert run_test(args) == 0
    pics = sorted(show.glob("*.png"))
    assert len(pics) == 4
    pics[0].write_bytes(b"kept")
    capsys.readouterr()
    assert run_test(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--show-dir" in err[0] and pics[0].name in err[0] and "--force" in err[0]
    assert pics[0].read_bytes() == b"kept"
    assert run_test([*args, "--force"]) == 0
    assert pics[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
