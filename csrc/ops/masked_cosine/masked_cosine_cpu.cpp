#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "masked_cosine_common.h"
#include "masked_cosine_host.h"

namespace segproto {
namespace {

struct CpuKernels {
  // x [B, C, L] contiguous opmath -> [B, L]
  static at::Tensor column_inv_norms(const at::Tensor& x, double eps) {
    const int64_t b = x.size(0), c = x.size(1), l = x.size(2);
    auto out = at::empty({b, l}, x.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "column_inv_norms_cpu", [&] {
      const scalar_t* px = x.const_data_ptr<scalar_t>();
      scalar_t* po = out.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, b * l, 256, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          const int64_t bi = i / l, li = i % l;
          po[i] = column_inv_norm(px + bi * c * l + li, c, l, static_cast<scalar_t>(eps));
        }
      });
    });
    return out;
  }

  static at::Tensor normalize_backward(const at::Tensor& x, const at::Tensor& g, double eps) {
    const int64_t b = x.size(0), c = x.size(1), l = x.size(2);
    auto dx = at::empty_like(x);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "normalize_backward_cpu", [&] {
      const scalar_t* px = x.const_data_ptr<scalar_t>();
      const scalar_t* pg = g.const_data_ptr<scalar_t>();
      scalar_t* pd = dx.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, b * l, 256, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          const int64_t off = (i / l) * c * l + i % l;
          normalize_backward_column(px + off, pg + off, pd + off, c, l, static_cast<scalar_t>(eps));
        }
      });
    });
    return dx;
  }
};

using Cpu = MaskedCosine<CpuKernels>;

}  // namespace
}  // namespace segproto

TORCH_LIBRARY_IMPL(segproto, CPU, m) {
  m.impl("masked_cosine_correlation", &segproto::Cpu::forward);
  m.impl("masked_cosine_correlation_backward", &segproto::Cpu::backward);
  m.impl("masked_cosine_prior", &segproto::Cpu::prior);
}
