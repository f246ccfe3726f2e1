#include "prototype_update.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../../common/checks.h"
#include "prototype_update_common.h"

namespace segproto {

std::tuple<at::Tensor, at::Tensor> prototype_update_check(const at::Tensor& protos, const at::Tensor& sums,
                                                          const at::Tensor& counts, double momentum) {
  constexpr const char* op = "segproto::prototype_update_";
  check_float(protos, op, "protos");
  check_dim(protos, 2, op, "protos", "[K, D]");
  check_float(sums, op, "sums");
  TORCH_CHECK(sums.sizes() == protos.sizes(), op, ": sums must have the shape of protos ",
              protos.sizes(), ", got ", sums.sizes());
  check_long(counts, op, "counts");
  TORCH_CHECK(counts.dim() == 1 && counts.size(0) == protos.size(0), op, ": counts must have shape [",
              protos.size(0), "], got ", counts.sizes());
  check_same_device(protos, sums, op, "protos", "sums");
  check_same_device(protos, counts, op, "protos", "counts");
  TORCH_CHECK(momentum >= 0.0 && momentum <= 1.0, op, ": momentum must be in [0, 1], got ", momentum);
  return {sums.to(at::toOpMathType(protos.scalar_type())).contiguous(), counts.contiguous()};
}

namespace {

void prototype_update_cpu(at::Tensor protos, const at::Tensor& sums_in, const at::Tensor& counts_in,
                          double momentum) {
  auto [sums, counts] = prototype_update_check(protos, sums_in, counts_in, momentum);
  // Work on a contiguous buffer; copy back if protos itself is not contiguous.
  at::Tensor work = protos.is_contiguous() ? protos : protos.contiguous();
  const int64_t k_classes = protos.size(0), d = protos.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, protos.scalar_type(), "prototype_update_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    scalar_t* p = work.mutable_data_ptr<scalar_t>();
    const acc_t* s = sums.const_data_ptr<acc_t>();
    const int64_t* c = counts.const_data_ptr<int64_t>();
    at::parallel_for(0, k_classes, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t k = c0; k < c1; ++k)
        prototype_update_row(p + k * d, s + k * d, c[k], static_cast<acc_t>(momentum), d);
    });
  });
  if (!work.is_same(protos)) protos.copy_(work);
}

}  // namespace
}  // namespace segproto

TORCH_LIBRARY_IMPL(segproto, CPU, m) { m.impl("prototype_update_", &segproto::prototype_update_cpu); }
