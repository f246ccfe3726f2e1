#include "memory_bank.h"

#include <ATen/TensorOperators.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../../common/checks.h"
#include "../../common/class_plan.h"
#include "memory_bank_common.h"

namespace segproto {

at::Tensor memory_bank_check(const at::Tensor& bank, const at::Tensor& ptr, const at::Tensor& count,
                             const at::Tensor& feats, const at::Tensor& labels) {
  constexpr const char* op = "segproto::memory_bank_push_";
  check_float(bank, op, "bank");
  check_dim(bank, 3, op, "bank", "[K, M, D]");
  TORCH_CHECK(bank.size(1) > 0, op, ": bank capacity M must be > 0");
  TORCH_CHECK(bank.is_contiguous(), op, ": bank must be contiguous (it is updated in place)");
  check_long(ptr, op, "ptr");
  check_long(count, op, "count");
  TORCH_CHECK(ptr.dim() == 1 && ptr.size(0) == bank.size(0), op, ": ptr must have shape [", bank.size(0),
              "], got ", ptr.sizes());
  TORCH_CHECK(count.dim() == 1 && count.size(0) == bank.size(0), op, ": count must have shape [",
              bank.size(0), "], got ", count.sizes());
  check_float(feats, op, "feats");
  check_dim(feats, 2, op, "feats", "[N, D]");
  TORCH_CHECK(feats.size(1) == bank.size(2), op, ": feats has D=", feats.size(1), " but the bank has D=",
              bank.size(2));
  check_long(labels, op, "labels");
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == feats.size(0), op, ": labels must have shape [",
              feats.size(0), "], got ", labels.sizes());
  check_same_device(bank, ptr, op, "bank", "ptr");
  check_same_device(bank, count, op, "bank", "count");
  check_same_device(bank, feats, op, "bank", "feats");
  check_same_device(bank, labels, op, "bank", "labels");
  return feats.to(at::toOpMathType(bank.scalar_type())).contiguous();
}

PushPlan memory_bank_prepare(const at::Tensor& bank, const at::Tensor& ptr, const at::Tensor& count,
                             const at::Tensor& feats, const at::Tensor& labels, int64_t ignore_index) {
  PushPlan p;
  p.feats = memory_bank_check(bank, ptr, count, feats, labels);
  p.k_classes = bank.size(0);
  p.capacity = bank.size(1);
  p.d = bank.size(2);
  p.n = p.feats.size(0);
  const auto lab = labels.contiguous();
  p.plan = make_class_plan(lab, p.k_classes, ignore_index);
  // Both checks in one device read (one host sync on a GPU).
  const auto host = read_host({ptr.lt(0).logical_or_(ptr.ge(p.capacity)).any(), p.plan.label_error});
  TORCH_CHECK(!host[0], "segproto::memory_bank_push_: ptr values must be in [0, M=", p.capacity, ")");
  if (host[1]) raise_bad_label(lab, p.k_classes, ignore_index, "segproto::memory_bank_push_");
  p.ptr = ptr.contiguous();
  return p;
}

void memory_bank_advance(at::Tensor& ptr, at::Tensor& count, const at::Tensor& pushed, int64_t capacity) {
  ptr.add_(pushed).remainder_(capacity);
  count.add_(pushed).clamp_max_(capacity);
}

namespace {

void memory_bank_push_cpu(at::Tensor bank, at::Tensor ptr, at::Tensor count, const at::Tensor& feats_in,
                          const at::Tensor& labels_in, int64_t ignore_index) {
  const PushPlan p = memory_bank_prepare(bank, ptr, count, feats_in, labels_in, ignore_index);
  if (p.n == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, bank.scalar_type(), "memory_bank_push_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    scalar_t* b = bank.mutable_data_ptr<scalar_t>();
    const acc_t* x = p.feats.const_data_ptr<acc_t>();
    const int64_t* pp = p.ptr.const_data_ptr<int64_t>();
    const int64_t* order = p.plan.order.const_data_ptr<int64_t>();
    const int64_t* keys = p.plan.keys.const_data_ptr<int64_t>();
    const int64_t* offsets = p.plan.offsets.const_data_ptr<int64_t>();
    // Surviving rows go to distinct slots, so positions can be written in parallel.
    at::parallel_for(0, p.n, 64, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i)
        push_sorted_row(b, pp, x, order, keys, offsets, p.k_classes, p.capacity, p.d, i);
    });
  });
  memory_bank_advance(ptr, count, p.plan.counts, p.capacity);
}

}  // namespace
}  // namespace segproto

TORCH_LIBRARY_IMPL(segproto, CPU, m) { m.impl("memory_bank_push_", &segproto::memory_bank_push_cpu); }
