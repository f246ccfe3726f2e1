// Per-class arithmetic of prototype_update_, shared by the CPU and CUDA kernels.
#pragma once

#include "../../common/macros.h"

namespace segproto {

template <typename acc_t>
SEGPROTO_HD inline acc_t momentum_blend(acc_t old_value, acc_t new_value, acc_t momentum) {
  return momentum * old_value + (acc_t(1) - momentum) * new_value;
}

// Updates one prototype row p[0..d) from the class's (sum, count):
//   mu = normalize(sum / count)
//   p  = mu                                   if p is all zeros (never set)
//   p  = normalize(m * p + (1 - m) * mu)      otherwise
// A class with count == 0 is left exactly as it was.
template <typename scalar_t, typename acc_t>
SEGPROTO_HD inline void prototype_update_row(scalar_t* p, const acc_t* sum, int64_t count, acc_t m,
                                             int64_t d) {
  if (count <= 0) return;
  const acc_t inv_count = acc_t(1) / static_cast<acc_t>(count);
  acc_t mean_sq = acc_t(0);
  bool is_set = false;
  for (int64_t k = 0; k < d; ++k) {
    const acc_t v = sum[k] * inv_count;
    mean_sq += v * v;
    is_set = is_set || static_cast<acc_t>(p[k]) != acc_t(0);
  }
  const acc_t inv_mu = inv_norm_from_sumsq(mean_sq, acc_t(kNormEps));
  if (!is_set) {
    for (int64_t k = 0; k < d; ++k) p[k] = static_cast<scalar_t>(sum[k] * inv_count * inv_mu);
    return;
  }
  acc_t blend_sq = acc_t(0);
  for (int64_t k = 0; k < d; ++k) {
    const acc_t b = momentum_blend(static_cast<acc_t>(p[k]), sum[k] * inv_count * inv_mu, m);
    blend_sq += b * b;
  }
  const acc_t inv_b = inv_norm_from_sumsq(blend_sq, acc_t(kNormEps));
  for (int64_t k = 0; k < d; ++k) {
    const acc_t b = momentum_blend(static_cast<acc_t>(p[k]), sum[k] * inv_count * inv_mu, m);
    p[k] = static_cast<scalar_t>(b * inv_b);
  }
}

}  // namespace segproto
