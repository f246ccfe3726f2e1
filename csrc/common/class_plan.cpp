#include "class_plan.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/bincount.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/cumsum.h>
#include <ATen/ops/full_like.h>
#include <ATen/ops/masked_select.h>
#include <ATen/ops/minimum.h>
#include <ATen/ops/repeat_interleave.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <vector>

namespace segproto {
namespace {

// [0, cumsum(x)...]: the [K + 1] CSR offsets of per-class counts x [K].
at::Tensor prepend_zero(const at::Tensor& x) {
  std::vector<at::Tensor> parts{at::zeros({1}, x.options()), at::cumsum(x, 0)};
  return at::cat(parts);
}

}  // namespace

void check_labels(const at::Tensor& labels, int64_t num_classes, int64_t ignore_index,
                  const char* op) {
  TORCH_CHECK(num_classes >= 0, op, ": num_classes must be >= 0, got ", num_classes);
  if (labels.numel() == 0) return;
  const auto bad = labels.ne(ignore_index).logical_and_(labels.lt(0).logical_or_(labels.ge(num_classes)));
  if (bad.any().item<bool>()) {
    const int64_t value = labels.masked_select(bad)[0].item<int64_t>();
    TORCH_CHECK_VALUE(false, op, ": label ", value, " is outside the valid range [0, ", num_classes,
                ") and is not ignore_index (", ignore_index, ")");
  }
}

ClassPlan make_class_plan(const at::Tensor& labels, int64_t num_classes, int64_t ignore_index,
                          const char* op) {
  check_labels(labels, num_classes, ignore_index, op);
  ClassPlan plan;
  const auto ignored = at::full_like(labels, num_classes);
  const auto keys = at::where(labels.eq(ignore_index), ignored, labels);
  auto sorted = at::sort(keys, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  plan.keys = std::get<0>(sorted).contiguous();
  plan.order = std::get<1>(sorted).contiguous();
  plan.counts = at::bincount(keys, {}, num_classes + 1).narrow(0, 0, num_classes).contiguous();
  plan.offsets = prepend_zero(plan.counts).contiguous();
  return plan;
}

ChunkPlan make_chunk_plan(const ClassPlan& plan, int64_t chunk) {
  ChunkPlan cp;
  const auto opts = plan.counts.options();
  const int64_t num_classes = plan.counts.size(0);
  const auto per_class = (plan.counts + (chunk - 1)).div(chunk, "floor");  // [K]
  cp.class_chunk_offsets = prepend_zero(per_class).contiguous();
  cp.num_chunks = num_classes == 0 ? 0 : cp.class_chunk_offsets[num_classes].item<int64_t>();
  cp.chunk_class = at::repeat_interleave(at::arange(num_classes, opts), per_class, 0, cp.num_chunks);
  const auto first = cp.class_chunk_offsets.index_select(0, cp.chunk_class);
  const auto rank = at::arange(cp.num_chunks, opts) - first;
  cp.chunk_begin = (plan.offsets.index_select(0, cp.chunk_class) + rank * chunk).contiguous();
  cp.chunk_end = at::minimum(cp.chunk_begin + chunk,
                             plan.offsets.index_select(0, cp.chunk_class + 1)).contiguous();
  cp.chunk_class = cp.chunk_class.contiguous();
  return cp;
}

}  // namespace segproto
