// Host-side launcher shared by the CPU and CUDA registrations of class_sums.
#pragma once

#include <ATen/core/Tensor.h>
#include <tuple>

namespace segproto {

std::tuple<at::Tensor, at::Tensor> class_sums_cpu(const at::Tensor& feats, const at::Tensor& labels,
                                                  int64_t num_classes, int64_t ignore_index,
                                                  bool normalize);
std::tuple<at::Tensor, at::Tensor> class_sums_cuda(const at::Tensor& feats, const at::Tensor& labels,
                                                   int64_t num_classes, int64_t ignore_index,
                                                   bool normalize);

// Shape/dtype checks; returns contiguous (feats, labels).
std::tuple<at::Tensor, at::Tensor> class_sums_check(const at::Tensor& feats, const at::Tensor& labels,
                                                    int64_t num_classes);

}  // namespace segproto
