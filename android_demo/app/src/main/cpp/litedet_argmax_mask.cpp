// litedet on-device postprocessing of the 'argmax_mask' kind; see litedet_argmax_mask.h.
// Mirrors runtime/kinds/argmax_mask.py function by function.
//
// Build with -ffp-contract=off and without -ffast-math.
#include "litedet_argmax_mask.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <stdexcept>

#include "litedet_config_common.h"

// GCC vectorizes only some loops at -O2; these elementwise loops (no reductions over floats, so
// the same roundings in any order) are the whole cost of the kind, so they ask for it. Clang
// (the NDK) vectorizes them at -O2 anyway.
#if defined(__GNUC__) && !defined(__clang__)
#define LITEDET_VECTORIZE __attribute__((optimize("tree-vectorize")))
#else
#define LITEDET_VECTORIZE
#endif

namespace litedet {

bool parse_argmax_mask_config(const std::string& text, ArgmaxMaskConfig& cfg, std::string* error) {
  auto fail = [&](const std::string& msg) {
    if (error) *error = msg;
    return false;
  };
  ArgmaxMaskConfig c;
  auto read = [&](cfgread::Reader& r) {
#define LITEDET_MASK_READ(key, type, lo, hi) c.key = r.read_##type(#key, lo, hi);
    LITEDET_ARGMAX_MASK_KEYS(LITEDET_MASK_READ)
#undef LITEDET_MASK_READ
  };
  if (!read_kind_config(text, "argmax_mask", "parse_argmax_mask_config", read, error)) return false;
  const std::string common = common_config_problem(c);
  if (!common.empty()) return fail(common);
  if (c.upsample != "graph" && c.upsample != "runtime")
    return fail("config key 'upsample' is '" + c.upsample + "'; expected 'graph' or 'runtime'");
  if ((c.upsample == "graph") != (c.head_stride == 1))
    return fail("config key 'head_stride' is " + std::to_string(c.head_stride) + " with upsample '" + c.upsample +
                "': the logits are at stride 1 exactly when the graph upsamples them");
  if (c.pad_multiple % c.head_stride) return fail("config key 'pad_multiple' must be a multiple of 'head_stride'");
  if (static_cast<long long>(c.palette.size()) != 3LL * c.num_classes)
    return fail("config key 'palette' has " + std::to_string(c.palette.size()) + " values; " +
                std::to_string(c.num_classes) + " classes need " + std::to_string(3 * c.num_classes));
  for (float v : c.palette)
    if (!(v >= 0.f && v <= 255.f) || v != std::floor(v))
      return fail("config key 'palette' must hold whole numbers from 0 to 255 (R, G, B per class)");
  cfg = std::move(c);
  return true;
}

void bilinear_taps(int out_size, int in_size, std::vector<int>& i0, std::vector<int>& i1, std::vector<float>& w1) {
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  i0.resize(out_size);
  i1.resize(out_size);
  w1.resize(out_size);
  for (int d = 0; d < out_size; ++d) {
    float src = (static_cast<float>(d) + 0.5f) * scale - 0.5f;
    src = src > 0.f ? src : 0.f;  // np.maximum(src, 0)
    const int a = std::min(static_cast<int>(src), in_size - 1);
    i0[d] = a;
    i1[d] = std::min(a + 1, in_size - 1);
    w1[d] = src - static_cast<float>(a);
  }
}

namespace {
// One class's plane into the running maximum: where v > best (strict: a tie keeps the lower
// class), best = v and lab = k. 32-bit lanes, the select done on the bits with an integer mask
// (GCC does not if-convert a float select), so the loop vectorizes and the values move
// unchanged; bad collects whether v is NaN or inf (all exponent bits set).
inline void keep_one(const float* v, int32_t k, size_t i, float& fb, int32_t& b, int32_t& l, int32_t& bad) {
  int32_t a;
  std::memcpy(&a, v + i, sizeof a);
  bad |= static_cast<int32_t>((a & 0x7f800000) == 0x7f800000);
  const int32_t m = -static_cast<int32_t>(v[i] > fb);
  b = (a & m) | (b & ~m);
  l = (k & m) | (l & ~m);
  std::memcpy(&fb, &b, sizeof fb);
}

// Planes v1 (class k1) and, with Two, v2 (class k1 + 1) in one pass over best and lab: the same
// updates in the same order as one pass per class, half the memory traffic. Returns bad.
template <bool Two>
LITEDET_VECTORIZE bool keep_larger(const float* __restrict v1, const float* __restrict v2, int k1,
                                   float* __restrict best, float* __restrict lab, size_t n) {
  const float f1 = static_cast<float>(k1), f2 = static_cast<float>(k1 + 1);
  int32_t k1i, k2i;
  std::memcpy(&k1i, &f1, sizeof k1i);
  std::memcpy(&k2i, &f2, sizeof k2i);
  int32_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    float fb = best[i];
    int32_t b, l;
    std::memcpy(&b, best + i, sizeof b);
    std::memcpy(&l, lab + i, sizeof l);
    keep_one(v1, k1i, i, fb, b, l, bad);
    if (Two) keep_one(v2, k2i, i, fb, b, l, bad);
    std::memcpy(best + i, &b, sizeof b);
    std::memcpy(lab + i, &l, sizeof l);
  }
  return bad != 0;
}

// Classes from..c-1 of c planes (plane k at p(k)) into best / lab, two per pass. Returns bad.
template <class Plane>
bool keep_classes(Plane p, int from, int c, float* best, float* lab, size_t n) {
  bool bad = false;
  int k = from;
  for (; k + 1 < c; k += 2) bad = keep_larger<true>(p(k), p(k + 1), k, best, lab, n) || bad;
  if (k < c) bad = keep_larger<false>(p(k), p(k), k, best, lab, n) || bad;
  return bad;
}

LITEDET_VECTORIZE void to_labels(const float* __restrict lab, size_t n, uint8_t* __restrict out) {
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(static_cast<int>(lab[i]));
}

// true when some value is NaN or inf (all exponent bits set), one integer pass
LITEDET_VECTORIZE bool any_not_finite(const float* p, size_t n) {
  uint32_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, p + i, sizeof u);
    bad |= static_cast<uint32_t>((u & 0x7f800000u) == 0x7f800000u);
  }
  return bad != 0;
}

LITEDET_VECTORIZE void blend_rows(const float* __restrict top, const float* __restrict bot, float wy0, float wy,
                                  float* __restrict out, int n) {
  for (int x = 0; x < n; ++x) out[x] = wy0 * top[x] + wy * bot[x];
}
}  // namespace

void upsample_argmax(const float* logits, int c, int h, int w, size_t cstep, int out_h, int out_w, uint8_t* out) {
  std::vector<int> y0, y1, x0, x1;
  std::vector<float> ly, lx;
  bilinear_taps(out_h, h, y0, y1, ly);
  bilinear_taps(out_w, w, x0, x1, lx);
  // per class, the two source rows interpolated along x (top: row y0, bot: row y1), kept while
  // consecutive output rows share their source rows (8 of them at stride 8): the same float
  // operations as the numpy mirror, done once instead of per output row
  std::vector<float> top(static_cast<size_t>(c) * out_w), bot(static_cast<size_t>(c) * out_w);
  std::vector<float> best(out_w), v(static_cast<size_t>(c) * out_w), lab(out_w);
  int cached0 = -1, cached1 = -1;
  auto interp_row = [&](const float* src, float* dst) {
    for (int x = 0; x < out_w; ++x) dst[x] = (1.f - lx[x]) * src[x0[x]] + lx[x] * src[x1[x]];
  };
  for (int y = 0; y < out_h; ++y) {
    if (y0[y] != cached0 || y1[y] != cached1) {
      for (int k = 0; k < c; ++k) {
        const float* p = logits + static_cast<size_t>(k) * cstep;
        interp_row(p + static_cast<size_t>(y0[y]) * w, &top[static_cast<size_t>(k) * out_w]);
        interp_row(p + static_cast<size_t>(y1[y]) * w, &bot[static_cast<size_t>(k) * out_w]);
      }
      cached0 = y0[y];
      cached1 = y1[y];
    }
    const float wy = ly[y], wy0 = 1.f - wy;
    blend_rows(top.data(), bot.data(), wy0, wy, best.data(), out_w);
    std::fill(lab.begin(), lab.end(), 0.f);
    for (int k = 1; k < c; ++k) {  // class-major: each class's row, then into the maximum (two at a time)
      const size_t off = static_cast<size_t>(k) * out_w;
      blend_rows(&top[off], &bot[off], wy0, wy, &v[off], out_w);
    }
    keep_classes([&](int k) { return &v[static_cast<size_t>(k) * out_w]; }, 1, c, best.data(), lab.data(), out_w);
    to_labels(lab.data(), out_w, out + static_cast<size_t>(y) * out_w);
  }
}

static bool argmax_labels_checked(const float* logits, int c, int h, int w, size_t cstep, uint8_t* out) {
  const size_t n = static_cast<size_t>(h) * w;
  std::vector<float> best(logits, logits + n), lab(n, 0.f);
  bool bad = any_not_finite(logits, n);
  // class-major: streams each plane once
  bad = keep_classes([&](int k) { return logits + static_cast<size_t>(k) * cstep; }, 1, c, best.data(), lab.data(), n) ||
        bad;
  to_labels(lab.data(), n, out);
  return !bad;
}

void argmax_labels(const float* logits, int c, int h, int w, size_t cstep, uint8_t* out) {
  argmax_labels_checked(logits, c, h, w, cstep, out);
}

void map_mask_back(const uint8_t* labels, int in_w, const Letterbox& lb, uint8_t* out) {
  std::vector<long long> xs(lb.src_w);
  for (int x = 0; x < lb.src_w; ++x) xs[x] = lb.pad_left + static_cast<long long>(x) * lb.resized_w / lb.src_w;
  for (int y = 0; y < lb.src_h; ++y) {
    const long long yi = lb.pad_top + static_cast<long long>(y) * lb.resized_h / lb.src_h;
    const uint8_t* row = labels + yi * in_w;
    uint8_t* o = out + static_cast<size_t>(y) * lb.src_w;
    for (int x = 0; x < lb.src_w; ++x) o[x] = row[xs[x]];
  }
}

LabelMask segment_outputs(const ArgmaxMaskConfig& cfg, const float* logits, int c, int h, int w, size_t cstep,
                          const Letterbox& lb) {
  const int s = cfg.head_stride;
  const int want_h = (lb.in_h + s - 1) / s, want_w = (lb.in_w + s - 1) / s;
  if (c != cfg.num_classes || h != want_h || w != want_w)
    throw std::invalid_argument("logits have shape (" + std::to_string(c) + ", " + std::to_string(h) + ", " +
                                std::to_string(w) + "); a " + std::to_string(lb.in_w) + "x" + std::to_string(lb.in_h) +
                                " input at stride " + std::to_string(s) + " needs (" + std::to_string(cfg.num_classes) +
                                ", " + std::to_string(want_h) + ", " + std::to_string(want_w) + ")");
  std::vector<uint8_t> labels(static_cast<size_t>(lb.in_w) * lb.in_h);
  bool finite = true;
  if (cfg.upsample == "runtime") {  // the head's logits are small: checked in a pass of their own
    for (int k = 0; k < c && finite; ++k) finite = !any_not_finite(logits + static_cast<size_t>(k) * cstep, static_cast<size_t>(h) * w);
    if (finite) upsample_argmax(logits, c, h, w, cstep, lb.in_h, lb.in_w, labels.data());
  } else {
    finite = argmax_labels_checked(logits, c, h, w, cstep, labels.data());
  }
  if (!finite)
    throw std::invalid_argument("the logits hold a value that is not finite (NaN or inf): the graph is broken");
  LabelMask m;
  m.width = lb.src_w;
  m.height = lb.src_h;
  m.labels.resize(static_cast<size_t>(lb.src_w) * lb.src_h);
  map_mask_back(labels.data(), lb.in_w, lb, m.labels.data());
  for (float v : cfg.palette) m.palette_rgb.push_back(static_cast<uint8_t>(v));
  return m;
}

LITEDET_REGISTER_CONFIG_DUMP("argmax_mask", ArgmaxMaskConfig, parse_argmax_mask_config, LITEDET_ARGMAX_MASK_KEYS);

}  // namespace litedet
