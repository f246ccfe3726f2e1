// Macros and scalar helpers shared by host (.cpp) and device (.cu) code.
// No ATen here: everything in this header compiles for both sides.
#pragma once

#include <c10/macros/Macros.h>
#include <math.h>
#include <stdint.h>

#define SEGPROTO_HD C10_HOST_DEVICE

namespace segproto {

// The F.normalize clamp: x / max(||x||, 1e-12).
constexpr double kNormEps = 1e-12;

SEGPROTO_HD inline float seg_sqrt(float x) { return sqrtf(x); }
SEGPROTO_HD inline double seg_sqrt(double x) { return sqrt(x); }

// 1 / max(sqrt(sumsq), eps), in the accumulation type.
template <typename acc_t>
SEGPROTO_HD inline acc_t inv_norm_from_sumsq(acc_t sumsq, acc_t eps) {
  const acc_t n = seg_sqrt(sumsq);
  return acc_t(1) / (n > eps ? n : eps);
}

// Sum of squares of x[0], x[stride], ..., x[(n-1)*stride], accumulated in order.
template <typename acc_t, typename scalar_t>
SEGPROTO_HD inline acc_t strided_sumsq(const scalar_t* x, int64_t n, int64_t stride) {
  acc_t s = acc_t(0);
  for (int64_t k = 0; k < n; ++k) {
    const acc_t v = static_cast<acc_t>(x[k * stride]);
    s += v * v;
  }
  return s;
}

}  // namespace segproto
