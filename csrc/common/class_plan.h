// Host-only index bookkeeping shared by every per-class reduction (CPU and CUDA launchers).
//
// Rows are stably sorted by label (ignored rows last), so class c owns the sorted positions
// [offsets[c], offsets[c + 1]) in increasing row order: a CSR layout. Reductions walk those
// segments in order, so results never depend on thread scheduling (no atomics).
#pragma once

#include <ATen/core/Tensor.h>

namespace segproto {

struct ClassPlan {
  at::Tensor order;    // [N] int64: row indices, stably sorted by class; ignored rows at the end
  at::Tensor keys;     // [N] int64: the class of each sorted position (num_classes = ignored)
  at::Tensor counts;   // [K] int64: rows per class
  at::Tensor offsets;  // [K + 1] int64: exclusive cumsum of counts
};

// Raises (naming `op`, the bad value and the valid range) when a label is neither in
// [0, num_classes) nor equal to ignore_index.
void check_labels(const at::Tensor& labels, int64_t num_classes, int64_t ignore_index,
                  const char* op);

ClassPlan make_class_plan(const at::Tensor& labels, int64_t num_classes, int64_t ignore_index,
                          const char* op);

// Splits each class segment into chunks of at most `chunk` rows (fixed, independent of the
// thread count). Returns [T] tensors: chunk class, first and one-past-last sorted position,
// plus the [K + 1] offsets of each class's chunks.
struct ChunkPlan {
  at::Tensor chunk_class, chunk_begin, chunk_end, class_chunk_offsets;
  int64_t num_chunks;
};
ChunkPlan make_chunk_plan(const ClassPlan& plan, int64_t chunk);

}  // namespace segproto
