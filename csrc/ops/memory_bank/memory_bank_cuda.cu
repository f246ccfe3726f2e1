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
  const at::Tensor feats = memory_bank_check(bank, ptr, count, feats_in, labels_in);
  const c10::cuda::CUDAGuard guard(bank.device());
  const int64_t k_classes = bank.size(0), capacity = bank.size(1), d = bank.size(2);
  const ClassPlan plan = make_class_plan(labels_in.contiguous(), k_classes, ignore_index,
                                         "segproto::memory_bank_push_");
  const int64_t n = feats.size(0);
  if (n == 0) return;
  const at::Tensor ptr_c = ptr.contiguous();
  constexpr int threads = 128;
  const unsigned blocks = static_cast<unsigned>((n + threads - 1) / threads);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, bank.scalar_type(), "memory_bank_push_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    push_kernel<scalar_t, acc_t><<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        bank.mutable_data_ptr<scalar_t>(), ptr_c.const_data_ptr<int64_t>(), feats.const_data_ptr<acc_t>(),
        plan.order.const_data_ptr<int64_t>(), plan.keys.const_data_ptr<int64_t>(),
        plan.offsets.const_data_ptr<int64_t>(), k_classes, capacity, d, n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  memory_bank_advance(ptr, count, plan.counts, capacity);
}

}  // namespace
}  // namespace segproto

TORCH_LIBRARY_IMPL(segproto, CUDA, m) { m.impl("memory_bank_push_", &segproto::memory_bank_push_cuda); }
