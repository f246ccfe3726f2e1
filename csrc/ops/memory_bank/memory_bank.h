#pragma once

#include <ATen/core/Tensor.h>

#include "../../common/class_plan.h"

namespace segproto {

// Checks arguments; returns feats converted to the opmath type of the bank (contiguous).
at::Tensor memory_bank_check(const at::Tensor& bank, const at::Tensor& ptr, const at::Tensor& count,
                             const at::Tensor& feats, const at::Tensor& labels);

// Everything both launchers need before their kernel: checked, converted inputs and the CSR plan.
struct PushPlan {
  at::Tensor feats;  // [N, D] in the bank's opmath type, contiguous
  at::Tensor ptr;    // [K] contiguous (read by the kernel; the caller's ptr is advanced after)
  ClassPlan plan;
  int64_t k_classes, capacity, d, n;
};
PushPlan memory_bank_prepare(const at::Tensor& bank, const at::Tensor& ptr, const at::Tensor& count,
                             const at::Tensor& feats, const at::Tensor& labels, int64_t ignore_index);

// ptr = (ptr + n) mod M; count = min(count + n, M)   (ATen ops: any device).
void memory_bank_advance(at::Tensor& ptr, at::Tensor& count, const at::Tensor& pushed, int64_t capacity);

}  // namespace segproto
