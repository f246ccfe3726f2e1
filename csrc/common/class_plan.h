// Host-only index bookkeeping shared by every per-class reduction (CPU and CUDA launchers).
//
// Rows are stably sorted by label (ignored rows last), so class c owns the sorted positions
// [offsets[c], offsets[c + 1]) in increasing row order: a CSR layout. Reductions walk those
// segments in order, so results never depend on thread scheduling (no atomics).
//
// Host syncs: building a plan reads nothing from the device (offsets by a search in the sorted keys,
// not bincount, which reads the labels' min and max on a GPU); callers read the plan's label-error flag together with
// whatever else they need on the host, in one copy (read_host), so an op costs one sync on a GPU.
#pragma once

#include <ATen/core/Tensor.h>

#include <initializer_list>
#include <vector>

namespace segproto {

struct ClassPlan {
  at::Tensor order;        // [N] int64: row indices, stably sorted by class; ignored rows at the end
  at::Tensor keys;         // [N] int64: the class of each sorted position (num_classes = ignored)
  at::Tensor counts;       // [K] int64: rows per class
  at::Tensor offsets;      // [K + 1] int64: exclusive cumsum of counts
  at::Tensor label_error;  // [] bool: some label is neither in [0, K) nor ignore_index (such rows
                           // are planned as ignored; the caller must raise, see raise_bad_label)
};

// Raises (naming `op`, the bad value and the valid range) when a label is neither in
// [0, num_classes) nor equal to ignore_index. One host read.
void check_labels(const at::Tensor& labels, int64_t num_classes, int64_t ignore_index,
                  const char* op);

// Raises for the first bad label of `labels` (call when a plan's label_error was read as true).
[[noreturn]] void raise_bad_label(const at::Tensor& labels, int64_t num_classes, int64_t ignore_index,
                                  const char* op);

// The values of 0-dim tensors (bool or integer, same device) on the host, in one copy.
std::vector<int64_t> read_host(std::initializer_list<at::Tensor> values);

// No host read; labels are not checked here (see ClassPlan::label_error).
ClassPlan make_class_plan(const at::Tensor& labels, int64_t num_classes, int64_t ignore_index);

// Splits each class segment into chunks of at most `chunk` rows (fixed, independent of the
// thread count). Returns [T] tensors: chunk class, first and one-past-last sorted position,
// plus the [K + 1] offsets of each class's chunks. Reads the chunk count T from the device,
// in the same copy as the plan's label-error flag, and raises for a bad label (`labels`, `op`).
struct ChunkPlan {
  at::Tensor chunk_class, chunk_begin, chunk_end, class_chunk_offsets;
  int64_t num_chunks;
};
ChunkPlan make_chunk_plan(const ClassPlan& plan, int64_t chunk, const at::Tensor& labels,
                          int64_t ignore_index, const char* op);

}  // namespace segproto
