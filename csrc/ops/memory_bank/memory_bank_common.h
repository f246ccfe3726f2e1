// Per-row arithmetic of memory_bank_push_, shared by the CPU and CUDA kernels.
#pragma once

#include "../../common/macros.h"

namespace segproto {

// Slot of the j-th row (0-based, in row order) pushed to a class whose pointer is `ptr`.
SEGPROTO_HD inline int64_t ring_slot(int64_t ptr, int64_t j, int64_t capacity) {
  return (ptr + j) % capacity;
}

// Of n rows pushed to a ring of `capacity` slots, only rows j >= first_surviving survive.
SEGPROTO_HD inline int64_t first_surviving(int64_t n, int64_t capacity) {
  return n > capacity ? n - capacity : 0;
}

// dst[0..d) = normalize(src[0..d)), arithmetic in acc_t.
template <typename scalar_t, typename src_t, typename acc_t>
SEGPROTO_HD inline void write_normalized_row(scalar_t* dst, const src_t* src, int64_t d) {
  const acc_t inv = inv_norm_from_sumsq(row_sumsq<acc_t>(src, d), acc_t(kNormEps));
  for (int64_t k = 0; k < d; ++k) dst[k] = static_cast<scalar_t>(static_cast<acc_t>(src[k]) * inv);
}

// Pushes the row at sorted position p (class c = key, its j = p - offsets[c]) if it survives.
template <typename scalar_t, typename acc_t>
SEGPROTO_HD inline void push_sorted_row(scalar_t* bank, const int64_t* ptr, const acc_t* feats,
                                        const int64_t* order, const int64_t* keys, const int64_t* offsets,
                                        int64_t num_classes, int64_t capacity, int64_t d, int64_t p) {
  const int64_t c = keys[p];
  if (c >= num_classes) return;  // ignored rows are sorted last
  const int64_t n = offsets[c + 1] - offsets[c];
  const int64_t j = p - offsets[c];
  if (j < first_surviving(n, capacity)) return;
  const int64_t slot = ring_slot(ptr[c], j, capacity);
  write_normalized_row<scalar_t, acc_t, acc_t>(bank + (c * capacity + slot) * d, feats + order[p] * d, d);
}

}  // namespace segproto
