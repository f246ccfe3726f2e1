// Device-independent composition of the masked cosine ops. `Kernels` supplies the two
// per-column kernels (CPU or CUDA); the dot products go through at::bmm (MKL / cuBLAS), which no
// hand-written loop beats. Arithmetic is in the opmath type of the inputs.
//
//   corr[b, i, j] = mask[b, j] * <q_i, s_j> / (max(||q_i||, eps) * max(||s_j||, eps))
//                 = <q_i * iq_i, s_j * is_j * mask[b, j]>
#pragma once

#include <ATen/TensorOperators.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <tuple>

#include "../../common/checks.h"

namespace segproto {

// Budget for one [B, tile, Ls] block of scores in masked_cosine_prior (elements).
constexpr int64_t kPriorTileElems = int64_t(1) << 22;

inline void masked_cosine_check(const at::Tensor& q, const at::Tensor& s, const at::Tensor& mask, double eps,
                                const char* op) {
  check_float(q, op, "query");
  check_float(s, op, "support");
  check_float(mask, op, "mask");
  check_dim(q, 3, op, "query", "[B, C, Lq]");
  check_dim(s, 3, op, "support", "[B, C, Ls]");
  check_dim(mask, 2, op, "mask", "[B, Ls]");
  TORCH_CHECK(q.scalar_type() == s.scalar_type(), op, ": query and support must have the same dtype, got ",
              q.scalar_type(), " and ", s.scalar_type());
  TORCH_CHECK(q.size(0) == s.size(0) && q.size(1) == s.size(1), op,
              ": query [B, C, Lq] and support [B, C, Ls] must agree on B and C, got ", q.sizes(), " and ",
              s.sizes());
  TORCH_CHECK(mask.size(0) == s.size(0) && mask.size(1) == s.size(2), op, ": mask must have shape [",
              s.size(0), ", ", s.size(2), "], got ", mask.sizes());
  check_same_device(q, s, op, "query", "support");
  check_same_device(q, mask, op, "query", "mask");
  TORCH_CHECK(eps > 0.0, op, ": eps must be > 0, got ", eps);
}

template <class Kernels>
struct MaskedCosine {
  static at::Tensor acc(const at::Tensor& x, at::ScalarType t) { return x.to(t).contiguous(); }

  static at::Tensor forward(const at::Tensor& q, const at::Tensor& s, const at::Tensor& mask, double eps) {
    masked_cosine_check(q, s, mask, eps, "segproto::masked_cosine_correlation");
    const auto t = at::toOpMathType(q.scalar_type());
    const auto qf = acc(q, t), sf = acc(s, t), mf = acc(mask, t);
    const auto qn = qf * Kernels::column_inv_norms(qf, eps).unsqueeze(1);               // [B, C, Lq]
    const auto sn = sf * (Kernels::column_inv_norms(sf, eps) * mf).unsqueeze(1);        // [B, C, Ls]
    return at::bmm(qn.transpose(1, 2), sn).to(q.scalar_type());                         // [B, Lq, Ls]
  }

  static std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad, const at::Tensor& q,
                                                     const at::Tensor& s, const at::Tensor& mask, double eps) {
    constexpr const char* op = "segproto::masked_cosine_correlation_backward";
    masked_cosine_check(q, s, mask, eps, op);
    TORCH_CHECK(grad.dim() == 3 && grad.size(0) == q.size(0) && grad.size(1) == q.size(2) &&
                    grad.size(2) == s.size(2),
                op, ": grad must have shape [B, Lq, Ls], got ", grad.sizes());
    const auto t = at::toOpMathType(q.scalar_type());
    const auto qf = acc(q, t), sf = acc(s, t), mf = acc(mask, t), g = acc(grad, t);
    const auto qn = qf * Kernels::column_inv_norms(qf, eps).unsqueeze(1);
    const auto sn = sf * (Kernels::column_inv_norms(sf, eps) * mf).unsqueeze(1);
    const auto d_qn = at::bmm(sn, g.transpose(1, 2)).contiguous();                     // [B, C, Lq]
    const auto d_sn = (at::bmm(qn, g) * mf.unsqueeze(1)).contiguous();                 // [B, C, Ls]
    return {Kernels::normalize_backward(qf, d_qn, eps).to(q.scalar_type()),
            Kernels::normalize_backward(sf, d_sn, eps).to(s.scalar_type())};
  }

  // max_j corr[b, i, j] without materialising [B, Lq, Ls]: the query axis is processed in tiles
  // of at most kPriorTileElems scores ([B, tile, Ls], reduced along its contiguous last axis),
  // the support scale is applied to each score tile in place and the positive query scale iq_i
  // after the max, so neither input is copied (float32 input).
  static at::Tensor prior(const at::Tensor& q, const at::Tensor& s, const at::Tensor& mask, double eps) {
    masked_cosine_check(q, s, mask, eps, "segproto::masked_cosine_prior");
    const auto t = at::toOpMathType(q.scalar_type());
    const int64_t b = q.size(0), lq = q.size(2), ls = s.size(2);
    if (ls == 0 || lq == 0 || b == 0) return at::zeros({b, lq}, q.options());
    const auto qf = acc(q, t), sf = acc(s, t);
    const auto col_scale = (Kernels::column_inv_norms(sf, eps) * acc(mask, t)).unsqueeze(1);  // [B, 1, Ls]
    const auto qt = qf.transpose(1, 2);                                                       // [B, Lq, C]
    const int64_t tile = std::max<int64_t>(1, std::min<int64_t>(lq, kPriorTileElems / (b * ls)));
    auto best = at::empty({b, lq}, qf.options());
    for (int64_t i0 = 0; i0 < lq; i0 += tile) {
      const int64_t h = std::min(tile, lq - i0);
      auto scores = at::bmm(qt.narrow(1, i0, h), sf);                                         // [B, h, Ls]
      best.narrow(1, i0, h).copy_(scores.mul_(col_scale).amax(2));
    }
    return (best * Kernels::column_inv_norms(qf, eps)).to(q.scalar_type());
  }
};

}  // namespace segproto
