// CPU kernel of segproto::prcl_negatives_ (semantics: docs/ops.md). The PRCL negative sampler's
// inner pass, fused: per row, the class of each draw (runs of `counts`), Lemire's offset of its
// 31-bit word into the class's block of the class-sorted pixel pool, and the pixel. The random
// words and the per-row class counts come from torch's generator in Python, so the result is
// bitwise that of the pure-PyTorch path (segproto.losses.prcl), whatever the thread count.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <vector>

#include "../../common/checks.h"

namespace segproto {

namespace {
constexpr int64_t kLow = (int64_t(1) << 31) - 1;
}

// pix, cls: [R, M] int64 (written). counts: [R, K] int64, per-row draws of each class in class order
// (row sums M, or 0 for a row without mass: its draws get `fill` and class -1). words: [R * M] int32,
// uniform in [0, 2^31). pixels: [P] int64, the pool sorted by class; start, count: [K] int64, each
// class's block. A draw with word w takes v = (w + 1) mod 2^31 and offset (v * n) >> 31 in its
// class's block of n pixels. Returns the ascending flat positions of the "suspects",
// (v * n) mod 2^31 < n: a superset of Lemire's rejections, which the caller redraws.
at::Tensor prcl_negatives_cpu(at::Tensor& pix, at::Tensor& cls, const at::Tensor& counts, const at::Tensor& words,
                              const at::Tensor& pixels, const at::Tensor& start, const at::Tensor& count,
                              int64_t fill) {
  constexpr const char* op = "segproto::prcl_negatives_";
  check_long(pix, op, "pix");
  check_long(cls, op, "cls");
  check_long(counts, op, "counts");
  check_long(pixels, op, "pixels");
  check_long(start, op, "start");
  check_long(count, op, "count");
  TORCH_CHECK(words.scalar_type() == at::kInt, op, ": 'words' must be int32, got ", words.scalar_type());
  check_dim(pix, 2, op, "pix", "[R, M]");
  check_dim(counts, 2, op, "counts", "[R, K]");
  TORCH_CHECK(cls.sizes() == pix.sizes(), op, ": 'cls' must have the shape of 'pix' ", pix.sizes(), ", got ",
              cls.sizes());
  TORCH_CHECK(pix.is_contiguous() && cls.is_contiguous(), op, ": 'pix' and 'cls' must be contiguous");
  const int64_t r = pix.size(0), m = pix.size(1), k = counts.size(1);
  TORCH_CHECK(counts.size(0) == r, op, ": 'counts' has ", counts.size(0), " rows, 'pix' ", r);
  TORCH_CHECK(words.numel() == r * m, op, ": 'words' must hold R * M = ", r * m, " words, got ", words.numel());
  TORCH_CHECK(start.numel() == k && count.numel() == k, op, ": 'start' and 'count' must hold K = ", k,
              " entries, got ", start.numel(), " and ", count.numel());
  const auto cnt = counts.contiguous();
  const auto w = words.contiguous();
  const auto px = pixels.contiguous();
  const auto st = start.contiguous();
  const auto nn = count.contiguous();
  const int64_t* c_p = cnt.const_data_ptr<int64_t>();
  const int32_t* w_p = w.const_data_ptr<int32_t>();
  const int64_t* px_p = px.const_data_ptr<int64_t>();
  const int64_t* st_p = st.const_data_ptr<int64_t>();
  const int64_t* n_p = nn.const_data_ptr<int64_t>();
  const int64_t npix = px.numel();
  int64_t* pix_p = pix.mutable_data_ptr<int64_t>();
  int64_t* cls_p = cls.mutable_data_ptr<int64_t>();
  std::vector<std::vector<int64_t>> suspects(r);
  std::vector<int> bad_row(r, 0);
  at::parallel_for(0, r, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row) {
      const int64_t base = row * m;
      int64_t pos = 0;
      for (int64_t c = 0; c < k; ++c) {
        const int64_t take = c_p[row * k + c];
        if (take == 0) continue;
        const int64_t n = n_p[c], s = st_p[c];
        if (take < 0 || pos + take > m || n <= 0 || s < 0 || s + n > npix) {
          bad_row[row] = 1;
          break;
        }
        for (int64_t j = 0; j < take; ++j, ++pos) {
          const int64_t v = (int64_t(w_p[base + pos]) + 1) & kLow;
          const int64_t prod = v * n;
          if ((prod & kLow) < n) suspects[row].push_back(base + pos);
          pix_p[base + pos] = px_p[s + (prod >> 31)];
          cls_p[base + pos] = c;
        }
      }
      if (bad_row[row]) continue;
      if (pos != 0 && pos != m) {
        bad_row[row] = 1;
        continue;
      }
      for (; pos < m; ++pos) {  // a row without mass
        pix_p[base + pos] = fill;
        cls_p[base + pos] = -1;
      }
    }
  });
  for (int64_t row = 0; row < r; ++row) {
    TORCH_CHECK(!bad_row[row], op, ": row ", row, " of 'counts' does not sum to M = ", m,
                " (or 0) over classes with pixels in the pool");
  }
  int64_t total = 0;
  for (const auto& v : suspects) total += static_cast<int64_t>(v.size());
  auto out = at::empty({total}, pix.options());
  int64_t* o = out.mutable_data_ptr<int64_t>();
  for (const auto& v : suspects) {
    for (int64_t p : v) *o++ = p;
  }
  return out;
}

}  // namespace segproto

TORCH_LIBRARY_IMPL(segproto, CPU, m) { m.impl("prcl_negatives_", &segproto::prcl_negatives_cpu); }
