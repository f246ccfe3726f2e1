"""PRCL sampling: our vectorised sampler against a public-code-style Python double loop.

    python -m benchmarks.prcl_sampler [--device cpu|cuda] [--dataset cityscapes|voc] [--repeats 3] [--quick]

Sizes from the public code (Haoyu-Xie/PRCL: configs ``CityScapes_prcl_config_150.yaml`` and
``VOC_prcl_config_*.yaml``; DeepLabv3+ representations at stride 4, labelled and unlabelled crops
concatenated): Cityscapes 6 + 6 crops of 512x512 -> N = 12 * 128 * 128 = 196,608 pixels, K = 19,
all classes present; VOC 2 + 2 crops of 321x321 -> N = 4 * 81 * 81 = 26,244 pixels, K = 21, six
classes present. D = 256, 256 anchors and 512 negatives per class, T = 100, one virtual negative
per other class. Labels follow a Zipf-like class-area law with 10% ignored pixels; predicted
probabilities are U(0.3, 1), so ~70% of the valid pixels are anchor candidates (< 0.8).

Timed in this one run, interleaved repeat by repeat, median of the repeats (our two samplers:
each repeat keeps the median of ``--inner`` consecutive calls):
- ``ours_sampler``: :func:`segproto.losses.prcl_sample` (anchors, negative classes, negative
  pixels, virtual negatives; CSR pools, one binomial chain, one uniform per draw);
- ``ours_sampler_pytorch``: the same with the compiled ``prcl_negatives_`` pass switched off
  (the pure-PyTorch negative-pixel path; bitwise the same draws);
- ``loop_sampler``: the same sampling in the public ``Prcl_Loss.forward`` style, producing index
  lists like ours: per class its pixel list, then per class a ``Categorical`` draw of [A, M]
  classes, per-class counts, and the double loop over (anchor, negative class) calling
  ``np.random.randint`` (``negative_index_sampler``);
- ``loop_sampler_public``: the same, with the public data flow (per-class masked copies of mu and
  var, negatives gathered as [A, M, D] features); ours never materialises those (the loss
  gathers rows chunk by chunk), so this ratio includes work we avoid rather than do faster;
- ``ours_loss``: :func:`segproto.losses.prcl_loss` forward + backward (``--quick``: 32 anchors);
- ``loop_loss`` (``--loop-loss``): the public-style loss end to end (per-class masked feature
  copies, the loop sampler, gathered [A, 1 + M + V', D] keys, dense MLS), forward + backward.
No timed assertions; JSON goes to ``benchmarks/results/prcl_sampler.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.common import machine, print_table, sync, write_json
from segproto import ops
from segproto.losses import distribution_prototypes, gdp_update, prcl_loss, prcl_sample

SIZES = {  # images, crop at stride 4 (h = w), classes, classes present
    "cityscapes": dict(images=12, side=128, k=19, present=19),
    "voc": dict(images=4, side=81, k=21, present=6),
}


def make_batch(dataset: str, d: int, device: str, seed: int = 0) -> dict:
    s = SIZES[dataset]
    n = s["images"] * s["side"] ** 2
    g = torch.Generator().manual_seed(seed)
    area = 1.0 / torch.arange(1, s["present"] + 1, dtype=torch.float64)  # Zipf-like class areas
    classes = torch.randperm(s["k"], generator=g)[: s["present"]]
    labels = classes[torch.multinomial(area, n, replacement=True, generator=g)]
    labels[torch.rand(n, generator=g) < 0.1] = 255
    mu = torch.randn(n, d, generator=g)
    var = torch.sigmoid(torch.randn(n, d, generator=g))
    probs = torch.rand(n, generator=g) * 0.7 + 0.3
    b = distribution_prototypes(mu, var, labels, s["k"])
    gdp_mu, gdp_prec = gdp_update(torch.zeros(s["k"], d), torch.zeros(s["k"], d), b.prec_sum, b.mu_prec_sum)
    out = dict(mu=mu, var=var, labels=labels, probs=probs, gdp_mu=gdp_mu, gdp_prec=gdp_prec)
    return {key: v.to(device) for key, v in out.items()} | {"k": s["k"], "n": n}


def _mls_public(mu0: Tensor, mu1: Tensor, var0: Tensor, var1: Tensor) -> Tensor:
    up = (F.normalize(mu0, dim=-1) - F.normalize(mu1, dim=-1)) ** 2
    down = var0 + var1
    return -0.5 * (up / down + torch.log(down)).mean(-1)


def _negative_index_loop(samp_num: Tensor, num_list: list[int]) -> list[int]:
    """Per anchor, per negative class: one np.random.randint over that class's slice."""
    index: list[int] = []
    for i in range(samp_num.shape[0]):
        for j in range(samp_num.shape[1]):
            index += np.random.randint(low=sum(num_list[:j]), high=sum(num_list[:j + 1]),
                                       size=int(samp_num[i, j])).tolist()
    return index


def loop_sample(b: dict, a: int, m: int, t: float, thr: float, v: int, features: bool = False) -> list:
    """The public per-class, per-anchor sampling (same distributions as ``prcl_sample``).

    ``features=False``: index lists only (like for like with ``prcl_sample``, which returns
    indices). ``features=True``: the public data flow as written: per class masked copies of
    mu / var (all and hard pixels), anchors and negatives as gathered feature tensors (the
    concatenation of the other classes' copies indexed by the loop's index list).
    """
    labels, probs, k = b["labels"], b["probs"], b["k"]
    all_x, hard_x, num_list, cls_list = [], [], [], []
    for c in range(k):
        valid = labels == c
        if valid.sum() == 0:
            continue
        hard = valid & (probs < thr)
        if features:
            all_x.append((b["mu"][valid], b["var"][valid]))
            hard_x.append((b["mu"][hard], b["var"][hard]))
        else:
            all_x.append((torch.nonzero(valid).squeeze(1),))
            hard_x.append((torch.nonzero(hard).squeeze(1),))
        num_list.append(int(valid.sum().item()))
        cls_list.append(c)
    proto_mu = b["gdp_mu"][cls_list]
    proto_var = 1.0 / b["gdp_prec"][cls_list]
    seg = torch.arange(len(cls_list))
    out = []
    for i, c in enumerate(cls_list):
        n_hard = len(hard_x[i][0])
        if n_hard == 0:
            continue
        pick = torch.randint(n_hard, (a,), device=labels.device)
        anchors = [x[pick] for x in hard_x[i]]
        with torch.no_grad():
            order = torch.cat([seg[i:], seg[:i]]).to(labels.device)
            sim = _mls_public(proto_mu[order[:1]], proto_mu[order[1:]], proto_var[order[:1]], proto_var[order[1:]])
            prob = torch.softmax(sim / t, dim=0)
            samp_class = torch.distributions.Categorical(probs=prob).sample([a, m])
            samp_num = torch.stack([(samp_class == j).sum(1) for j in range(len(prob))], 1)
            index = _negative_index_loop(samp_num, num_list[i + 1:] + num_list[:i])
            others_x = all_x[i + 1:] + all_x[:i]
            negatives = [torch.cat([x[f] for x in others_x])[index].reshape(a, m, -1).squeeze(-1)
                         for f in range(len(all_x[i]))]
            others = [o for o in range(k) if o != c and bool(b["gdp_prec"][o].gt(0).all())]
            g_mu, g_prec = b["gdp_mu"][others], b["gdp_prec"][others]
            virtual = g_mu.unsqueeze(1) + torch.randn(len(others), v, g_mu.shape[1], device=g_mu.device) \
                * g_prec.rsqrt().unsqueeze(1)
        out.append((anchors, negatives, virtual))
    return out


def loop_loss(b: dict, a: int, m: int, t: float, thr: float, v: int) -> float:
    """The public ``Prcl_Loss.forward`` style end to end: per-class masked copies of mu / var (all
    and hard), then per class the loop sampler, gathered [A, 1 + M + V', D] keys and a dense MLS.
    Backward per class (the public code sums first; same work, bounded memory here)."""
    mu, var = b["mu"].clone().requires_grad_(), b["var"].clone().requires_grad_()
    labels, probs, k = b["labels"], b["probs"], b["k"]
    mu_all, var_all, mu_hard, var_hard, num_list, cls_list = [], [], [], [], [], []
    for c in range(k):
        valid = labels == c
        if valid.sum() == 0:
            continue
        hard = valid & (probs < thr)
        mu_all.append(mu[valid]), var_all.append(var[valid]), mu_hard.append(mu[hard]), var_hard.append(var[hard])
        num_list.append(int(valid.sum().item()))
        cls_list.append(c)
    proto_mu, proto_var = b["gdp_mu"][cls_list], 1.0 / b["gdp_prec"][cls_list]
    seg = torch.arange(len(cls_list))
    total = 0.0
    for i, c in enumerate(cls_list):
        if len(mu_hard[i]) == 0:
            continue
        pick = torch.randint(len(mu_hard[i]), (a,), device=mu.device)
        anchor_mu, anchor_var = mu_hard[i][pick], var_hard[i][pick]
        with torch.no_grad():
            order = torch.cat([seg[i:], seg[:i]]).to(mu.device)
            sim = _mls_public(proto_mu[order[:1]], proto_mu[order[1:]], proto_var[order[:1]], proto_var[order[1:]])
            samp_class = torch.distributions.Categorical(probs=torch.softmax(sim / t, dim=0)).sample([a, m])
            samp_num = torch.stack([(samp_class == j).sum(1) for j in range(len(cls_list) - 1)], 1)
            index = _negative_index_loop(samp_num, num_list[i + 1:] + num_list[:i])
            neg_mu = torch.cat(mu_all[i + 1:] + mu_all[:i])[index].reshape(a, m, -1)
            neg_var = torch.cat(var_all[i + 1:] + var_all[:i])[index].reshape(a, m, -1)
            others = [o for o in range(k) if o != c and bool(b["gdp_prec"][o].gt(0).all())]
            g_mu, g_prec = b["gdp_mu"][others], b["gdp_prec"][others]
            virt = (g_mu.unsqueeze(1) + torch.randn(len(others), v, g_mu.shape[1], device=mu.device)
                    * g_prec.rsqrt().unsqueeze(1)).reshape(1, -1, g_mu.shape[1]).expand(a, -1, -1)
            keys_mu = torch.cat([b["gdp_mu"][c].expand(a, 1, -1), neg_mu, virt], 1)
            keys_var = torch.cat([(1.0 / b["gdp_prec"][c]).expand(a, 1, -1), neg_var, torch.zeros_like(virt)], 1)
        logits = _mls_public(anchor_mu.unsqueeze(1), keys_mu, anchor_var.unsqueeze(1), keys_var)
        loss = F.cross_entropy(logits / t, torch.zeros(a, dtype=torch.long, device=mu.device)) / len(cls_list)
        loss.backward(retain_graph=True)  # the per-class copies are shared by every class's graph
        total += loss.item()
    return total


def _time(fn, device: str) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dataset", default="cityscapes", choices=sorted(SIZES))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--loop-loss", action="store_true",
                   help="also time the public-style loss end to end (slow; minutes on CPU at full size)")
    p.add_argument("--quick", action="store_true", help="1 repeat, losses timed with 32 anchors (a smoke run)")
    p.add_argument("--inner", type=int, default=5,
                   help="calls of each of our samplers per repeat, their median kept (they take ms; the "
                        "first call after the multi-second loss variants pays a cold cache)")
    p.add_argument("--out", default="benchmarks/results/prcl_sampler.json")
    a = p.parse_args(argv)
    d, anchors, negatives, t, thr, v = 256, 256, 512, 100.0, 0.8, 1
    if a.threads:
        torch.set_num_threads(a.threads)
    repeats = 1 if a.quick else a.repeats
    inner = 1 if a.quick else max(1, a.inner)
    loss_anchors = 32 if a.quick else anchors
    b = make_batch(a.dataset, d, a.device)
    kw = dict(num_anchors=anchors, num_negatives=negatives, temperature=t, weak_threshold=thr, num_virtual=v)
    gen = torch.Generator(device=a.device).manual_seed(0)
    np.random.seed(0)
    torch.manual_seed(0)

    def ours_sampler():
        return prcl_sample(b["mu"], b["var"], b["labels"], b["probs"], b["gdp_mu"], b["gdp_prec"], generator=gen, **kw)

    def ours_sampler_pytorch():
        with mock.patch.object(ops, "has_prcl_negatives_kernel", lambda t: False):
            return ours_sampler()

    def ours_loss():
        mu, var = b["mu"].clone().requires_grad_(), b["var"].clone().requires_grad_()
        loss, _ = prcl_loss(mu, var, b["labels"], b["probs"], b["gdp_mu"], b["gdp_prec"], generator=gen,
                            **(kw | {"num_anchors": loss_anchors}))
        loss.backward()

    s = ours_sampler()  # warm-up, and a validity check of both samplers
    assert bool((b["labels"][s.negatives] != s.classes.view(-1, 1, 1)).all())
    for (cls_anchors,), (cls_neg,), _ in loop_sample(b, 4, 8, t, thr, v)[:2]:
        assert bool((b["labels"][cls_neg] != b["labels"][cls_anchors].view(-1, 1)).all())
    times: dict[str, list[float]] = {"ours_sampler": [], "ours_sampler_pytorch": [], "loop_sampler": [], "loop_sampler_public": [],
                                     "ours_loss": []}
    if a.loop_loss:
        times["loop_loss"] = []
    for _ in range(repeats):  # interleaved, so load changes hit every variant alike
        for key, fn in (("ours_sampler", ours_sampler), ("ours_sampler_pytorch", ours_sampler_pytorch)):
            times[key].append(statistics.median(_time(fn, a.device) for _ in range(inner)))
        times["loop_sampler"].append(_time(lambda: loop_sample(b, anchors, negatives, t, thr, v), a.device))
        times["loop_sampler_public"].append(
            _time(lambda: loop_sample(b, anchors, negatives, t, thr, v, features=True), a.device))
        times["ours_loss"].append(_time(ours_loss, a.device))
        if a.loop_loss:
            times["loop_loss"].append(_time(lambda: loop_loss(b, loss_anchors, negatives, t, thr, v), a.device))
    med = {key: statistics.median(val) for key, val in times.items()}
    rows = [{"variant": key, "ms": round(val * 1e3, 2), "x_ours_sampler": round(val / med["ours_sampler"], 1)}
            for key, val in med.items()]
    print(f"{a.dataset}: N = {b['n']} pixels, K = {b['k']}, {int(s.classes.numel())} anchor classes, D = {d}, "
          f"A = {anchors}, M = {negatives}, device {a.device}, repeats {repeats}"
          + (f" (loss with {loss_anchors} anchors)" if loss_anchors != anchors else ""))
    print_table(rows, ["variant", "ms", "x_ours_sampler"])
    speedup = med["loop_sampler"] / med["ours_sampler"]
    speedup_public = med["loop_sampler_public"] / med["ours_sampler"]
    speedup_pytorch = med["loop_sampler"] / med["ours_sampler_pytorch"]
    print(f"sampler speedup, indices only (loop / ours): {speedup:.1f}x (target >= 50x); "
          f"without the compiled pass: {speedup_pytorch:.1f}x")
    print(f"sampler speedup, public data flow with feature copies (loop / ours): {speedup_public:.1f}x")
    if a.loop_loss:
        print(f"loss speedup (loop / ours, forward + backward): {med['loop_loss'] / med['ours_loss']:.1f}x")
    out = write_json(a.out, {
        "machine": machine(), "build": ops.build_info(), "device": a.device, "quick": a.quick, "repeats": repeats,
        "inner_calls_of_ours_sampler": inner,
        "dataset": a.dataset,
        "sizes": {"pixels": b["n"], "num_classes": b["k"], "anchor_classes": int(s.classes.numel()), "dim": d,
                  "anchors": anchors, "negatives": negatives, "virtual_per_class": v, "temperature": t,
                  "loss_anchors": loss_anchors},
        "times_s": times, "rows": rows, "sampler_speedup": speedup,
        "sampler_speedup_pytorch_path": speedup_pytorch, "sampler_speedup_public": speedup_public,
        "loss_speedup": med["loop_loss"] / med["ours_loss"] if a.loop_loss else None})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
