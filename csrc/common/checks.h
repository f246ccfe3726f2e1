// Host-only argument checks shared by the CPU and CUDA launchers.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace segproto {

inline void check_float(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), op, ": '", name,
              "' must be a floating tensor (float16, bfloat16, float32 or float64), got ",
              t.scalar_type());
}

inline void check_dim(const at::Tensor& t, int64_t dim, const char* op, const char* name,
                      const char* shape) {
  TORCH_CHECK(t.dim() == dim, op, ": '", name, "' must have shape ", shape, ", got ",
              t.sizes());
}

inline void check_long(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kLong, op, ": '", name, "' must be int64, got ",
              t.scalar_type());
}

inline void check_same_device(const at::Tensor& a, const at::Tensor& b, const char* op,
                              const char* na, const char* nb) {
  TORCH_CHECK(a.device() == b.device(), op, ": '", na, "' is on ", a.device(), " but '", nb,
              "' is on ", b.device());
}

}  // namespace segproto
