#include "class_sums.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
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

std::tuple<at::Tensor, at::Tensor> class_sums_cpu(const at::Tensor& feats_in, const at::Tensor& labels_in,
                                                  int64_t num_classes, int64_t ignore_index,
                                                  bool normalize) {
  auto [feats, labels] = class_sums_check(feats_in, labels_in, num_classes);
  const int64_t d = feats.size(1);
  const auto acc_type = at::toOpMathType(feats.scalar_type());
  auto sums = at::zeros({num_classes, d}, feats.options().dtype(acc_type));
  const ClassPlan plan = make_class_plan(labels, num_classes, ignore_index, "segproto::class_sums");
  if (feats.size(0) == 0 || num_classes == 0 || d == 0) return {sums, plan.counts};
  const ChunkPlan chunks = make_chunk_plan(plan, kClassSumsChunk);
  auto partials = at::empty({chunks.num_chunks, d}, sums.options());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, feats.scalar_type(), "class_sums_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* x = feats.const_data_ptr<scalar_t>();
    const int64_t* order = plan.order.const_data_ptr<int64_t>();
    const int64_t* begin = chunks.chunk_begin.const_data_ptr<int64_t>();
    const int64_t* end = chunks.chunk_end.const_data_ptr<int64_t>();
    acc_t* part = partials.mutable_data_ptr<acc_t>();
    // Pass 1: one partial per chunk, rows in increasing order.
    at::parallel_for(0, chunks.num_chunks, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        acc_t* acc = part + t * d;
        for (int64_t k = 0; k < d; ++k) acc[k] = acc_t(0);
        for (int64_t p = begin[t]; p < end[t]; ++p) {
          const scalar_t* row = x + order[p] * d;
          const acc_t scale = class_sums_row_scale<acc_t>(row, d, normalize);
          for (int64_t k = 0; k < d; ++k) acc[k] += static_cast<acc_t>(row[k]) * scale;
        }
      }
    });
    // Pass 2: chunk partials of each class, added in order.
    const int64_t* coff = chunks.class_chunk_offsets.const_data_ptr<int64_t>();
    acc_t* out = sums.mutable_data_ptr<acc_t>();
    at::parallel_for(0, num_classes * d, 4096, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t c = i / d, k = i % d;
        out[i] = class_sums_reduce_chunks(part, coff[c], coff[c + 1], d, k);
      }
    });
  });
  return {sums, plan.counts};
}

}  // namespace segproto

TORCH_LIBRARY_IMPL(segproto, CPU, m) { m.impl("class_sums", &segproto::class_sums_cpu); }
