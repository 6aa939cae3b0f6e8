// litedet on-device postprocessing of the 'argmax_mask' kind; see litedet_argmax_mask.h.
// Mirrors runtime/kinds/argmax_mask.py function by function.
//
// Build with -ffp-contract=off and without -ffast-math.
#include "litedet_argmax_mask.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <stdexcept>

#include "litedet_config_reader.h"

namespace litedet {

bool parse_argmax_mask_config(const std::string& text, ArgmaxMaskConfig& cfg, std::string* error) {
  auto fail = [&](const std::string& msg) {
    if (error) *error = msg;
    return false;
  };
  std::map<std::string, std::string> kv;
  if (!cfgread::split_lines(text, kv, error)) return false;
  cfgread::Reader r(std::move(kv));
  ArgmaxMaskConfig c;
  long long version = r.integer("version", 0, 1 << 20);
  if (!r.has_error() && version != LITEDET_CONFIG_VERSION)
    return fail("config key 'version' is " + std::to_string(version) + "; this litedet core reads version " +
                std::to_string(LITEDET_CONFIG_VERSION));
  const std::string kind = r.str("kind");  // the kind first, as parse_gfl_config
  if (!r.has_error() && kind != "argmax_mask")
    return fail("config key 'kind' is '" + kind + "'; parse_argmax_mask_config reads 'argmax_mask' configs");
#define LITEDET_MASK_READ(key, type, lo, hi) c.key = r.read_##type(#key, lo, hi);
  LITEDET_ARGMAX_MASK_KEYS(LITEDET_MASK_READ)
#undef LITEDET_MASK_READ
  if (r.has_error()) return fail(r.error);
  if (c.pixel_format != "bgr" && c.pixel_format != "rgb") return fail("config key 'pixel_format' must be 'bgr' or 'rgb'");
  if (!precision_problem(c.precision).empty())
    return fail("config key 'precision' is '" + c.precision + "'; expected " + precision_problem(c.precision));
  if (c.pad_mode != "stride_multiple" && c.pad_mode != "fixed")
    return fail("config key 'pad_mode' must be 'stride_multiple' or 'fixed'");
  if (resize_policy_code(c.resize_policy) < 0)
    return fail("config key 'resize_policy' is '" + c.resize_policy +
                "'; expected 'stretch_multiple', 'stretch', 'letterbox' or 'letterbox_top_left'");
  if (c.mean.size() != c.norm.size()) return fail("config keys 'mean' and 'norm' need one value per channel each");
  if (c.target_size % c.pad_multiple) return fail("config key 'target_size' must be a multiple of 'pad_multiple'");
  if (c.upsample != "graph" && c.upsample != "runtime")
    return fail("config key 'upsample' is '" + c.upsample + "'; expected 'graph' or 'runtime'");
  if ((c.upsample == "graph") != (c.head_stride == 1))
    return fail("config key 'head_stride' is " + std::to_string(c.head_stride) + " with upsample '" + c.upsample +
                "': the logits are at stride 1 exactly when the graph upsamples them");
  if (c.pad_multiple % c.head_stride) return fail("config key 'pad_multiple' must be a multiple of 'head_stride'");
  if (static_cast<long long>(c.class_names.size()) != c.num_classes)
    return fail("config key 'class_names' has " + std::to_string(c.class_names.size()) + " names but 'num_classes' is " +
                std::to_string(c.num_classes));
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

void upsample_argmax(const float* logits, int c, int h, int w, size_t cstep, int out_h, int out_w, uint8_t* out) {
  std::vector<int> y0, y1, x0, x1;
  std::vector<float> ly, lx;
  bilinear_taps(out_h, h, y0, y1, ly);
  bilinear_taps(out_w, w, x0, x1, lx);
  for (int y = 0; y < out_h; ++y) {
    const float wy = ly[y], wy0 = 1.f - wy;
    for (int x = 0; x < out_w; ++x) {
      const float wx = lx[x], wx0 = 1.f - wx;
      float best = 0.f;
      int label = 0;
      for (int k = 0; k < c; ++k) {
        const float* p = logits + static_cast<size_t>(k) * cstep;
        const float* r0 = p + static_cast<size_t>(y0[y]) * w;
        const float* r1 = p + static_cast<size_t>(y1[y]) * w;
        const float top = wx0 * r0[x0[x]] + wx * r0[x1[x]];
        const float bot = wx0 * r1[x0[x]] + wx * r1[x1[x]];
        const float v = wy0 * top + wy * bot;
        if (k == 0 || v > best) {  // strict: a tie keeps the lower class
          best = v;
          label = k;
        }
      }
      out[static_cast<size_t>(y) * out_w + x] = static_cast<uint8_t>(label);
    }
  }
}

void argmax_labels(const float* logits, int c, int h, int w, size_t cstep, uint8_t* out) {
  const size_t n = static_cast<size_t>(h) * w;
  for (size_t i = 0; i < n; ++i) {
    float best = logits[i];
    int label = 0;
    for (int k = 1; k < c; ++k) {
      const float v = logits[static_cast<size_t>(k) * cstep + i];
      if (v > best) {
        best = v;
        label = k;
      }
    }
    out[i] = static_cast<uint8_t>(label);
  }
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
  for (int k = 0; k < c; ++k)
    for (size_t i = 0, n = static_cast<size_t>(h) * w; i < n; ++i)
      if (!std::isfinite(logits[static_cast<size_t>(k) * cstep + i]))
        throw std::invalid_argument("the logits hold a value that is not finite (NaN or inf): the graph is broken");
  std::vector<uint8_t> labels(static_cast<size_t>(lb.in_w) * lb.in_h);
  if (cfg.upsample == "runtime")
    upsample_argmax(logits, c, h, w, cstep, lb.in_h, lb.in_w, labels.data());
  else
    argmax_labels(logits, c, h, w, cstep, labels.data());
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
