#pragma once

#include <ATen/core/Tensor.h>

namespace segproto {

// Checks shapes/dtypes/devices; returns sums converted to the opmath type of protos (contiguous)
// and contiguous counts.
std::tuple<at::Tensor, at::Tensor> prototype_update_check(const at::Tensor& protos, const at::Tensor& sums,
                                                          const at::Tensor& counts, double momentum);

}  // namespace segproto
