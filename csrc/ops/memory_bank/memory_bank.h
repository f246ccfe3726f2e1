#pragma once

#include <ATen/core/Tensor.h>

namespace segproto {

// Checks arguments; returns feats converted to the opmath type of the bank (contiguous).
at::Tensor memory_bank_check(const at::Tensor& bank, const at::Tensor& ptr, const at::Tensor& count,
                             const at::Tensor& feats, const at::Tensor& labels);

// ptr = (ptr + n) mod M; count = min(count + n, M)   (ATen ops: any device).
void memory_bank_advance(at::Tensor& ptr, at::Tensor& count, const at::Tensor& pushed, int64_t capacity);

}  // namespace segproto
