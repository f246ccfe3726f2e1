#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../../common/class_plan.h"
#include "class_sums.h"
#include "class_sums_common.h"

namespace segproto {
namespace {

constexpr int kThreads = 256;

// One thread per row: the same row-scale function the CPU kernel uses.
template <typename scalar_t, typename acc_t>
__global__ void row_scale_kernel(const scalar_t* x, int64_t n, int64_t d, bool normalize,
                                 acc_t* scale) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) scale[i] = class_sums_row_scale<acc_t>(x + i * d, d, normalize);
}

// One block per chunk; threads stride over columns; rows of the chunk in increasing order.
template <typename scalar_t, typename acc_t>
__global__ void chunk_sums_kernel(const scalar_t* x, const acc_t* scale, const int64_t* order,
                                  const int64_t* begin, const int64_t* end, int64_t d, acc_t* part) {
  const int64_t t = blockIdx.x;
  for (int64_t k = threadIdx.x; k < d; k += blockDim.x) {
    acc_t acc = acc_t(0);
    for (int64_t p = begin[t]; p < end[t]; ++p) {
      const int64_t r = order[p];
      acc += static_cast<acc_t>(x[r * d + k]) * scale[r];
    }
    part[t * d + k] = acc;
  }
}

template <typename acc_t>
__global__ void reduce_chunks_kernel(const acc_t* part, const int64_t* coff, int64_t num_classes,
                                     int64_t d, acc_t* out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= num_classes * d) return;
  const int64_t c = i / d, k = i % d;
  out[i] = class_sums_reduce_chunks(part, coff[c], coff[c + 1], d, k);
}

inline unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

}  // namespace

std::tuple<at::Tensor, at::Tensor> class_sums_cuda(const at::Tensor& feats_in, const at::Tensor& labels_in,
                                                   int64_t num_classes, int64_t ignore_index,
                                                   bool normalize) {
  auto [feats, labels] = class_sums_check(feats_in, labels_in, num_classes);
  const c10::cuda::CUDAGuard guard(feats.device());
  const int64_t n = feats.size(0), d = feats.size(1);
  const auto acc_type = at::toOpMathType(feats.scalar_type());
  auto sums = at::zeros({num_classes, d}, feats.options().dtype(acc_type));
  const ClassPlan plan = make_class_plan(labels, num_classes, ignore_index);
  if (n == 0 || num_classes == 0 || d == 0) {
    check_labels(labels, num_classes, ignore_index, "segproto::class_sums");
    return {sums, plan.counts};
  }
  // reads the chunk count and the label-error flag in one copy; raises for a bad label
  const ChunkPlan chunks = make_chunk_plan(plan, kClassSumsChunk, labels, ignore_index, "segproto::class_sums");
  if (chunks.num_chunks == 0) return {sums, plan.counts};
  auto partials = at::empty({chunks.num_chunks, d}, sums.options());
  auto scale = at::empty({n}, sums.options());
  auto stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, feats.scalar_type(), "class_sums_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    row_scale_kernel<scalar_t, acc_t><<<blocks_for(n), kThreads, 0, stream>>>(
        feats.const_data_ptr<scalar_t>(), n, d, normalize, scale.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    chunk_sums_kernel<scalar_t, acc_t><<<static_cast<unsigned>(chunks.num_chunks), kThreads, 0, stream>>>(
        feats.const_data_ptr<scalar_t>(), scale.const_data_ptr<acc_t>(), plan.order.const_data_ptr<int64_t>(),
        chunks.chunk_begin.const_data_ptr<int64_t>(), chunks.chunk_end.const_data_ptr<int64_t>(), d,
        partials.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    reduce_chunks_kernel<acc_t><<<blocks_for(num_classes * d), kThreads, 0, stream>>>(
        partials.const_data_ptr<acc_t>(), chunks.class_chunk_offsets.const_data_ptr<int64_t>(), num_classes,
        d, sums.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {sums, plan.counts};
}

}  // namespace segproto

TORCH_LIBRARY_IMPL(segproto, CUDA, m) { m.impl("class_sums", &segproto::class_sums_cuda); }
