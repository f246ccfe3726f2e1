// CPU kernel of segproto::select_per_class (semantics: docs/ops.md). The per-(image, class) pixel
// draw of PiCo's memory update, fused into one pass over the labels: each image keeps, per class,
// a bounded max-heap of the V smallest (key, pixel) pairs seen so far; the heaps are then sorted
// and written. O(B * N * log V), no sort of the pixels. CPU only: on CUDA the ATen composite of
// segproto/ops.py (two stable sorts, a scatter; no host sync) runs.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "../../common/checks.h"
#include "../../common/macros.h"

namespace segproto {
namespace {

// Lexicographic (key, pixel): the order the draw uses, ties broken by the smaller pixel index.
template <typename key_t>
inline bool before(const std::pair<key_t, int64_t>& a, const std::pair<key_t, int64_t>& b) {
  return a.first < b.first || (a.first == b.first && a.second < b.second);
}

template <typename key_t>
void select_image(const int64_t* lab, const key_t* key, int64_t n, int64_t k, int64_t v, int64_t ignore,
                  int64_t* out, std::vector<std::pair<key_t, int64_t>>& heap, std::vector<int64_t>& size,
                  int64_t* bad) {
  using entry = std::pair<key_t, int64_t>;
  const auto cmp = [](const entry& a, const entry& b) { return before(a, b); };  // max-heap on (key, pixel)
  std::fill(size.begin(), size.end(), 0);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = lab[i];
    if (is_bad_label(c, k, ignore)) {
      *bad = c;
      return;
    }
    if (c == ignore) continue;
    if (v == 0) continue;
    entry* h = heap.data() + c * v;
    const entry e{key[i], i};
    int64_t& s = size[c];
    if (s < v) {
      h[s++] = e;
      std::push_heap(h, h + s, cmp);
    } else if (before(e, h[0])) {
      std::pop_heap(h, h + s, cmp);
      h[s - 1] = e;
      std::push_heap(h, h + s, cmp);
    }
  }
  for (int64_t c = 0; c < k; ++c) {
    entry* h = heap.data() + c * v;
    std::sort_heap(h, h + size[c], cmp);  // ascending (key, pixel)
    int64_t* o = out + c * v;
    for (int64_t j = 0; j < v; ++j) o[j] = j < size[c] ? h[j].second : -1;
  }
}

}  // namespace

// labels: [B, N] int64; keys: [B, N] floating (entries at ignored pixels are not read).
// Returns [B, K, V] int64: per (image, class), the pixels of that class with the V smallest
// (key, pixel), in that order, then -1.
at::Tensor select_per_class_cpu(const at::Tensor& labels, const at::Tensor& keys, int64_t num_per_class,
                                int64_t num_classes, int64_t ignore_index) {
  constexpr const char* op = "segproto::select_per_class";
  check_long(labels, op, "labels");
  check_float(keys, op, "keys");
  check_dim(labels, 2, op, "labels", "[B, N]");
  TORCH_CHECK(keys.sizes() == labels.sizes(), op, ": 'keys' must have the shape of 'labels' ", labels.sizes(),
              ", got ", keys.sizes());
  check_same_device(labels, keys, op, "labels", "keys");
  TORCH_CHECK_VALUE(num_per_class >= 0, op, ": num_per_class must be >= 0, got ", num_per_class);
  TORCH_CHECK_VALUE(num_classes >= 0, op, ": num_classes must be >= 0, got ", num_classes);
  const int64_t b = labels.size(0), n = labels.size(1), k = num_classes, v = num_per_class;
  auto out = at::empty({b, k, v}, labels.options());
  const auto lab = labels.contiguous();
  const auto ky = keys.contiguous();
  std::vector<int64_t> bad(b, ignore_index);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ky.scalar_type(), "select_per_class_cpu", [&] {
    using key_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const int64_t* lp = lab.const_data_ptr<int64_t>();
    const scalar_t* kp = ky.const_data_ptr<scalar_t>();
    int64_t* op_ = out.mutable_data_ptr<int64_t>();
    at::parallel_for(0, b, 1, [&](int64_t b0, int64_t b1) {
      std::vector<std::pair<key_t, int64_t>> heap(static_cast<size_t>(k * v));
      std::vector<int64_t> size(static_cast<size_t>(k));
      std::vector<key_t> row(static_cast<size_t>(n));
      for (int64_t i = b0; i < b1; ++i) {
        for (int64_t j = 0; j < n; ++j) row[j] = static_cast<key_t>(kp[i * n + j]);
        select_image<key_t>(lp + i * n, row.data(), n, k, v, ignore_index, op_ + i * k * v, heap, size, &bad[i]);
      }
    });
  });
  for (int64_t i = 0; i < b; ++i) {
    TORCH_CHECK_VALUE(bad[i] == ignore_index, op, ": label ", bad[i], " (image ", i,
                      ") is outside the valid range [0, ", num_classes, ") and is not ignore_index (",
                      ignore_index, ")");
  }
  return out;
}

}  // namespace segproto

TORCH_LIBRARY_IMPL(segproto, CPU, m) { m.impl("select_per_class", &segproto::select_per_class_cpu); }
