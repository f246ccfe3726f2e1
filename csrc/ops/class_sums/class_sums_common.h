// Per-row arithmetic of class_sums, shared by the CPU and CUDA kernels.
#pragma once

#include "../../common/macros.h"

namespace segproto {

// Rows are reduced in chunks of this many sorted rows; chunk partials are then added in
// order. The association is fixed, so results do not depend on the thread count.
constexpr int64_t kClassSumsChunk = 256;

// Scale applied to row `row` (length d) before it is summed: 1, or 1/max(||row||, 1e-12).
template <typename acc_t, typename scalar_t>
SEGPROTO_HD inline acc_t class_sums_row_scale(const scalar_t* row, int64_t d, bool normalize) {
  if (!normalize) return acc_t(1);
  return inv_norm_from_sumsq<acc_t>(row_sumsq<acc_t>(row, d), acc_t(kNormEps));
}

// CPU: rows are reduced in fixed blocks of this many consecutive rows (each block keeps a
// [K, D] partial, rows in increasing order), then block partials are added in block order.
constexpr int64_t kClassSumsCpuBlock = 2048;

// acc[0..d) += row[0..d) * scale, in acc_t.
template <typename acc_t, typename scalar_t>
SEGPROTO_HD inline void accumulate_row(acc_t* __restrict__ acc, const scalar_t* __restrict__ row, acc_t scale,
                                       int64_t d) {
  for (int64_t k = 0; k < d; ++k) acc[k] += static_cast<acc_t>(row[k]) * scale;
}

// Sums chunk partials[first .. last) at column k, in order.
template <typename acc_t>
SEGPROTO_HD inline acc_t class_sums_reduce_chunks(const acc_t* partials, int64_t first,
                                                 int64_t last, int64_t d, int64_t k) {
  acc_t s = acc_t(0);
  for (int64_t t = first; t < last; ++t) s += partials[t * d + k];
  return s;
}

}  // namespace segproto
