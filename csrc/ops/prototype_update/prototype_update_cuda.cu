#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "prototype_update.h"
#include "prototype_update_common.h"

namespace segproto {
namespace {

// One thread per class (K x D is tiny): exactly the row function the CPU runs.
template <typename scalar_t, typename acc_t>
__global__ void prototype_update_kernel(scalar_t* p, const acc_t* s, const int64_t* c, int64_t k_classes,
                                        int64_t d, acc_t m) {
  const int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (k < k_classes) prototype_update_row(p + k * d, s + k * d, c[k], m, d);
}

void prototype_update_cuda(at::Tensor protos, const at::Tensor& sums_in, const at::Tensor& counts_in,
                           double momentum) {
  auto [sums, counts] = prototype_update_check(protos, sums_in, counts_in, momentum);
  const c10::cuda::CUDAGuard guard(protos.device());
  at::Tensor work = protos.is_contiguous() ? protos : protos.contiguous();
  const int64_t k_classes = protos.size(0), d = protos.size(1);
  if (k_classes == 0 || d == 0) return;
  constexpr int threads = 128;
  const unsigned blocks = static_cast<unsigned>((k_classes + threads - 1) / threads);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, protos.scalar_type(), "prototype_update_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    prototype_update_kernel<scalar_t, acc_t><<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        work.mutable_data_ptr<scalar_t>(), sums.const_data_ptr<acc_t>(), counts.const_data_ptr<int64_t>(),
        k_classes, d, static_cast<acc_t>(momentum));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  if (!work.is_same(protos)) protos.copy_(work);
}

}  // namespace
}  // namespace segproto

TORCH_LIBRARY_IMPL(segproto, CUDA, m) { m.impl("prototype_update_", &segproto::prototype_update_cuda); }
