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

// The label rule of every op (and of segproto/labels.py): a label is a class in [0, K) or
// ignore_index. Tensor-wide checks: check_labels in class_plan.h.
SEGPROTO_HD inline bool is_bad_label(int64_t c, int64_t num_classes, int64_t ignore_index) {
  return c != ignore_index && (c < 0 || c >= num_classes);
}

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

// Sum of squares of a contiguous row x[0..n), accumulated in 8 interleaved lanes (lane l takes
// elements l, l + 8, ...) that are then added pairwise. The order is fixed (deterministic), and
// the independent lanes let the compiler vectorise without -ffast-math.
template <typename acc_t, typename scalar_t>
SEGPROTO_HD inline acc_t row_sumsq(const scalar_t* x, int64_t n) {
  acc_t lane[8] = {acc_t(0), acc_t(0), acc_t(0), acc_t(0), acc_t(0), acc_t(0), acc_t(0), acc_t(0)};
  const int64_t body = n - n % 8;
  for (int64_t k = 0; k < body; k += 8) {
    for (int l = 0; l < 8; ++l) {
      const acc_t v = static_cast<acc_t>(x[k + l]);
      lane[l] += v * v;
    }
  }
  for (int64_t k = body; k < n; ++k) {
    const acc_t v = static_cast<acc_t>(x[k]);
    lane[k - body] += v * v;
  }
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

}  // namespace segproto
