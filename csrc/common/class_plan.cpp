#include "class_plan.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/cumsum.h>
#include <ATen/ops/full_like.h>
#include <ATen/ops/masked_select.h>
#include <ATen/ops/minimum.h>
#include <ATen/ops/repeat_interleave.h>
#include <ATen/ops/searchsorted.h>
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

// [N] bool: labels neither in [0, K) nor ignore_index (device ops only).
at::Tensor bad_label_mask(const at::Tensor& labels, int64_t num_classes, int64_t ignore_index) {
  return labels.ne(ignore_index).logical_and_(labels.lt(0).logical_or_(labels.ge(num_classes)));
}

}  // namespace

void raise_bad_label(const at::Tensor& labels, int64_t num_classes, int64_t ignore_index, const char* op) {
  const auto bad = bad_label_mask(labels, num_classes, ignore_index);
  TORCH_CHECK(bad.any().item<bool>(), op, ": internal error: no bad label to report");
  const int64_t value = labels.masked_select(bad)[0].item<int64_t>();
  TORCH_CHECK_VALUE(false, op, ": label ", value, " is outside the valid range [0, ", num_classes,
                    ") and is not ignore_index (", ignore_index, ")");
}

void check_labels(const at::Tensor& labels, int64_t num_classes, int64_t ignore_index,
                  const char* op) {
  TORCH_CHECK(num_classes >= 0, op, ": num_classes must be >= 0, got ", num_classes);
  if (labels.numel() == 0) return;
  if (bad_label_mask(labels, num_classes, ignore_index).any().item<bool>()) {
    raise_bad_label(labels, num_classes, ignore_index, op);
  }
}

std::vector<int64_t> read_host(std::initializer_list<at::Tensor> values) {
  std::vector<at::Tensor> parts;
  for (const auto& v : values) parts.push_back(v.reshape({1}).to(at::kLong));
  const auto host = at::cat(parts).to(at::kCPU).contiguous();
  const int64_t* p = host.const_data_ptr<int64_t>();
  return std::vector<int64_t>(p, p + host.numel());
}

ClassPlan make_class_plan(const at::Tensor& labels, int64_t num_classes, int64_t ignore_index) {
  TORCH_CHECK(num_classes >= 0, "num_classes must be >= 0, got ", num_classes);
  ClassPlan plan;
  const auto bad = bad_label_mask(labels, num_classes, ignore_index);
  plan.label_error = bad.any();
  const auto ignored = at::full_like(labels, num_classes);
  const auto keys = at::where(labels.eq(ignore_index).logical_or_(bad), ignored, labels);
  auto sorted = at::sort(keys, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  plan.keys = std::get<0>(sorted).contiguous();
  plan.order = std::get<1>(sorted).contiguous();
  // first sorted position of each class 0..K (K = the ignored rows): a search, not a count
  plan.offsets = at::searchsorted(plan.keys, at::arange(num_classes + 1, labels.options())).contiguous();
  plan.counts = (plan.offsets.narrow(0, 1, num_classes) - plan.offsets.narrow(0, 0, num_classes)).contiguous();
  return plan;
}

ChunkPlan make_chunk_plan(const ClassPlan& plan, int64_t chunk, const at::Tensor& labels, int64_t ignore_index,
                          const char* op) {
  ChunkPlan cp;
  const auto opts = plan.counts.options();
  const int64_t num_classes = plan.counts.size(0);
  const auto per_class = (plan.counts + (chunk - 1)).div(chunk, "floor");  // [K]
  cp.class_chunk_offsets = prepend_zero(per_class).contiguous();
  const auto host = read_host({cp.class_chunk_offsets[num_classes], plan.label_error});  // the one sync
  if (host[1]) raise_bad_label(labels, num_classes, ignore_index, op);
  cp.num_chunks = host[0];
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
