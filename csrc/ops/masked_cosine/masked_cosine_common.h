// Per-column arithmetic of masked_cosine_correlation / masked_cosine_prior, shared by the CPU
// and CUDA kernels. Inputs are [B, C, L]; a "column" is x[b, :, l], read with stride L.
#pragma once

#include "../../common/macros.h"

namespace segproto {

// 1 / max(||x[b, :, l]||, eps).
template <typename acc_t>
SEGPROTO_HD inline acc_t column_inv_norm(const acc_t* col, int64_t c, int64_t stride, acc_t eps) {
  return inv_norm_from_sumsq(strided_sumsq<acc_t>(col, c, stride), eps);
}

// Backward of xhat = x / max(||x||, eps) for one column, given g = dL/dxhat:
//   ||x|| > eps:  dx = (g - xhat * <xhat, g>) / ||x||
//   otherwise:    dx = g / eps            (the clamped branch is linear in x)
template <typename acc_t>
SEGPROTO_HD inline void normalize_backward_column(const acc_t* x, const acc_t* g, acc_t* dx, int64_t c,
                                                  int64_t stride, acc_t eps) {
  const acc_t norm = seg_sqrt(strided_sumsq<acc_t>(x, c, stride));
  if (!(norm > eps)) {
    for (int64_t k = 0; k < c; ++k) dx[k * stride] = g[k * stride] / eps;
    return;
  }
  const acc_t inv = acc_t(1) / norm;
  acc_t dot = acc_t(0);
  for (int64_t k = 0; k < c; ++k) dot += x[k * stride] * inv * g[k * stride];
  for (int64_t k = 0; k < c; ++k) dx[k * stride] = (g[k * stride] - x[k * stride] * inv * dot) * inv;
}

}  // namespace segproto
