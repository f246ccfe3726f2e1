#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "masked_cosine_common.h"
#include "masked_cosine_host.h"

namespace segproto {
namespace {

constexpr int kThreads = 256;

// One thread per column (b, l); neighbouring threads read neighbouring l: coalesced.
template <typename scalar_t>
__global__ void column_inv_norms_kernel(const scalar_t* x, int64_t b, int64_t c, int64_t l, scalar_t eps,
                                        scalar_t* out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < b * l) out[i] = column_inv_norm(x + (i / l) * c * l + i % l, c, l, eps);
}

template <typename scalar_t>
__global__ void normalize_backward_kernel(const scalar_t* x, const scalar_t* g, scalar_t* dx, int64_t b,
                                          int64_t c, int64_t l, scalar_t eps) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= b * l) return;
  const int64_t off = (i / l) * c * l + i % l;
  normalize_backward_column(x + off, g + off, dx + off, c, l, eps);
}

inline unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

struct CudaKernels {
  static at::Tensor column_inv_norms(const at::Tensor& x, double eps) {
    const c10::cuda::CUDAGuard guard(x.device());
    const int64_t b = x.size(0), c = x.size(1), l = x.size(2);
    auto out = at::empty({b, l}, x.options());
    if (b * l == 0) return out;
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "column_inv_norms_cuda", [&] {
      column_inv_norms_kernel<scalar_t><<<blocks_for(b * l), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          x.const_data_ptr<scalar_t>(), b, c, l, static_cast<scalar_t>(eps), out.mutable_data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return out;
  }

  static at::Tensor normalize_backward(const at::Tensor& x, const at::Tensor& g, double eps) {
    const c10::cuda::CUDAGuard guard(x.device());
    const int64_t b = x.size(0), c = x.size(1), l = x.size(2);
    auto dx = at::empty_like(x);
    if (b * l == 0) return dx.zero_();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "normalize_backward_cuda", [&] {
      normalize_backward_kernel<scalar_t><<<blocks_for(b * l), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          x.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(), dx.mutable_data_ptr<scalar_t>(), b, c, l,
          static_cast<scalar_t>(eps));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return dx;
  }
};

using Cuda = MaskedCosine<CudaKernels>;

}  // namespace
}  // namespace segproto

TORCH_LIBRARY_IMPL(segproto, CUDA, m) {
  m.impl("masked_cosine_correlation", &segproto::Cuda::forward);
  m.impl("masked_cosine_correlation_backward", &segproto::Cuda::backward);
  m.impl("masked_cosine_prior", &segproto::Cuda::prior);
}
