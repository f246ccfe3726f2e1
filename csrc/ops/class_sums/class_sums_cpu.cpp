#include "class_sums.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <torch/library.h>

#include "../../common/checks.h"
#include "../../common/class_plan.h"
#include "class_sums_common.h"

namespace segproto {

std::tuple<at::Tensor, at::Tensor> class_sums_check(const at::Tensor& feats, const at::Tensor& labels,
                                                    int64_t num_classes) {
  constexpr const char* op = "segproto::class_sums";
  check_float(feats, op, "feats");
  check_dim(feats, 2, op, "feats", "[N, D]");
  check_long(labels, op, "labels");
  check_dim(labels, 1, op, "labels", "[N]");
  TORCH_CHECK(labels.size(0) == feats.size(0), op, ": feats has ", feats.size(0),
              " rows but labels has ", labels.size(0));
  check_same_device(feats, labels, op, "feats", "labels");
  TORCH_CHECK(num_classes >= 0, op, ": num_classes must be >= 0, got ", num_classes);
  return {feats.contiguous(), labels.contiguous()};
}

// CPU: no sort and no gather. Rows are read once, in order, in fixed blocks of
// kClassSumsCpuBlock rows; each block accumulates a [K, D] partial (rows in increasing order),
// and partials are then added in block order. The association is fixed by N alone, so the result
// is bitwise reproducible whatever the thread count, like the CSR order the CUDA kernel uses.
std::tuple<at::Tensor, at::Tensor> class_sums_cpu(const at::Tensor& feats_in, const at::Tensor& labels_in,
                                                  int64_t num_classes, int64_t ignore_index,
                                                  bool normalize) {
  auto [feats, labels] = class_sums_check(feats_in, labels_in, num_classes);
  check_labels(labels, num_classes, ignore_index, "segproto::class_sums");
  const int64_t n = feats.size(0), d = feats.size(1);
  const auto acc_type = at::toOpMathType(feats.scalar_type());
  auto sums = at::zeros({num_classes, d}, feats.options().dtype(acc_type));
  auto counts = at::zeros({num_classes}, labels.options());
  if (n == 0 || num_classes == 0) return {sums, counts};
  // Fixed by (N, K, D) alone; grown only to bound the partials' memory (2^23 elements).
  int64_t block = kClassSumsCpuBlock;
  while (block < n && ((n + block - 1) / block) * num_classes * d > (int64_t(1) << 23)) block *= 2;
  const int64_t blocks = (n + block - 1) / block;
  auto partials = at::zeros({blocks, num_classes, d}, sums.options());
  auto block_counts = at::zeros({blocks, num_classes}, labels.options());
  const int64_t* y = labels.const_data_ptr<int64_t>();
  int64_t* bc = block_counts.mutable_data_ptr<int64_t>();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, feats.scalar_type(), "class_sums_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* x = feats.const_data_ptr<scalar_t>();
    acc_t* part = partials.mutable_data_ptr<acc_t>();
    at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r1 = std::min(n, (b + 1) * block);
        for (int64_t r = b * block; r < r1; ++r) {
          const int64_t c = y[r];
          if (c == ignore_index) continue;
          const scalar_t* row = x + r * d;
          accumulate_row(part + (b * num_classes + c) * d, row, class_sums_row_scale<acc_t>(row, d, normalize), d);
          ++bc[b * num_classes + c];
        }
      }
    });
    acc_t* out = sums.mutable_data_ptr<acc_t>();
    at::parallel_for(0, num_classes * d, 4096, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        acc_t s = acc_t(0);
        for (int64_t b = 0; b < blocks; ++b) s += part[b * num_classes * d + i];
        out[i] = s;
      }
    });
  });
  counts.copy_(block_counts.sum(0));
  return {sums, counts};
}

}  // namespace segproto

TORCH_LIBRARY_IMPL(segproto, CPU, m) { m.impl("class_sums", &segproto::class_sums_cpu); }
