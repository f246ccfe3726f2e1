#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../../common/class_plan.h"
#include "memory_bank.h"
#include "memory_bank_common.h"

namespace segproto {
namespace {

// One thread per sorted position; surviving rows write distinct slots.
template <typename scalar_t, typename acc_t>
__global__ void push_kernel(scalar_t* bank, const int64_t* ptr, const acc_t* feats, const int64_t* order,
                            const int64_t* keys, const int64_t* offsets, int64_t k_classes, int64_t capacity,
                            int64_t d, int64_t n) {
  const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p < n) push_sorted_row(bank, ptr, feats, order, keys, offsets, k_classes, capacity, d, p);
}

void memory_bank_push_cuda(at::Tensor bank, at::Tensor ptr, at::Tensor count, const at::Tensor& feats_in,
                           const at::Tensor& labels_in, int64_t ignore_index) {
  const c10::cuda::CUDAGuard guard(bank.device());
  const PushPlan p = memory_bank_prepare(bank, ptr, count, feats_in, labels_in, ignore_index);
  if (p.n == 0) return;
  constexpr int threads = 128;
  const unsigned blocks = static_cast<unsigned>((p.n + threads - 1) / threads);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, bank.scalar_type(), "memory_bank_push_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    push_kernel<scalar_t, acc_t><<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        bank.mutable_data_ptr<scalar_t>(), p.ptr.const_data_ptr<int64_t>(), p.feats.const_data_ptr<acc_t>(),
        p.plan.order.const_data_ptr<int64_t>(), p.plan.keys.const_data_ptr<int64_t>(),
        p.plan.offsets.const_data_ptr<int64_t>(), p.k_classes, p.capacity, p.d, p.n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  memory_bank_advance(ptr, count, p.plan.counts, p.capacity);
}

}  // namespace
}  // namespace segproto

TORCH_LIBRARY_IMPL(segproto, CUDA, m) { m.impl("memory_bank_push_", &segproto::memory_bank_push_cuda); }
