"""``Trainer(on_eval=...)``: the hook the sweeps report through. No Ray."""

from segproto.engine import Trainer, load_checkpoint


def test_on_eval_follows_each_evaluation_and_its_checkpoint(tiny_cfg, tmp_path, one_thread):
    calls = []

    def on_eval(it, metrics, ckpt):
        saved = None if ckpt is None else load_checkpoint(ckpt)["meta"]["iter"]  # on disk when called
        calls.append((it, metrics["mIoU"], ckpt and ckpt.name, saved))

    final = Trainer(tiny_cfg(eval_interval=2, checkpoint_interval=4), tmp_path / "wd", on_eval=on_eval).run()
    assert [(it, name, saved) for it, _, name, saved in calls] == [
        (2, None, None), (4, "iter_4.pth", 4), (6, "iter_6.pth", 6)]  # iteration 2 saves no checkpoint
    assert calls[-1][1] == final["mIoU"]
