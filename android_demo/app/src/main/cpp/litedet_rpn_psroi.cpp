// litedet two-stage core; see litedet_rpn_psroi.h. Mirrors runtime/kinds/rpn_psroi_ops.py function by
// function. Build with -ffp-contract=off and without -ffast-math (see litedet_boxes.h).
#include "litedet_rpn_psroi.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <stdexcept>

#include "litedet_config_common.h"
#include "litedet_kind.h"

namespace litedet {

// ---------------------------------------------------------------------------------------
// NAME.cfg
// ---------------------------------------------------------------------------------------
bool parse_rpn_psroi_config(const std::string& text, RpnPsroiConfig& cfg, std::string* error) {
  auto fail = [&](const std::string& msg) {
    if (error) *error = msg;
    return false;
  };
  RpnPsroiConfig c;
  auto read = [&](cfgread::Reader& r) {
#define LITEDET_TWO_STAGE_READ(key, type, lo, hi) c.key = r.read_##type(#key, lo, hi);
    LITEDET_RPN_PSROI_KEYS(LITEDET_TWO_STAGE_READ)
#undef LITEDET_TWO_STAGE_READ
  };
  if (!read_kind_config(text, "rpn_psroi", "parse_rpn_psroi_config", read, error)) return false;
  const std::string common = common_config_problem(c);
  if (!common.empty()) return fail(common);
  if (c.pad_multiple % c.stride) return fail("config key 'pad_multiple' must be a multiple of 'stride'");
  if (c.anchor_sizes.empty() || c.anchor_ratios.empty())
    return fail("config keys 'anchor_sizes' and 'anchor_ratios' must not be empty");
  for (float v : c.anchor_sizes)
    if (!(v > 0.f)) return fail("config key 'anchor_sizes' must hold positive sizes");
  for (float v : c.anchor_ratios)
    if (!(v > 0.f)) return fail("config key 'anchor_ratios' must hold positive ratios");
  for (const std::vector<float>* w : {&c.rpn_box_weights, &c.rcnn_box_weights}) {
    if (w->size() != 4) return fail("config keys 'rpn_box_weights' and 'rcnn_box_weights' need 4 values each");
    for (float v : *w)
      if (!(v > 0.f)) return fail("config keys 'rpn_box_weights' and 'rcnn_box_weights' must be positive");
  }
  if (c.head_layout != "features_by_rois")
    return fail("config key 'head_layout' is '" + c.head_layout + "'; this core runs heads laid out 'features_by_rois'");
  if (c.sampling_ratio == 0 && !(c.rpn_min_size > 0.f))
    return fail("config key 'rpn_min_size' must be > 0 with adaptive sampling (sampling_ratio=0)");
  cfg = std::move(c);
  return true;
}

// ---------------------------------------------------------------------------------------
// Anchors and box coding
// ---------------------------------------------------------------------------------------
namespace {
// np.minimum / np.maximum / np.clip as numpy computes them for finite floats (NaN passes)
inline float np_min(float a, float b) { return (std::isnan(a) || a < b) ? a : b; }
inline float np_max(float a, float b) { return (std::isnan(a) || a > b) ? a : b; }
inline float np_clip(float v, float lo, float hi) { return np_min(np_max(v, lo), hi); }

void clip_box(float* b, int in_w, int in_h) {
  const float w = static_cast<float>(in_w), h = static_cast<float>(in_h);
  b[0] = np_clip(b[0], 0.f, w);
  b[2] = np_clip(b[2], 0.f, w);
  b[1] = np_clip(b[1], 0.f, h);
  b[3] = np_clip(b[3], 0.f, h);
}

inline bool big_enough(const float* b, float min_size) { return (b[2] - b[0]) >= min_size && (b[3] - b[1]) >= min_size; }
}  // namespace

std::vector<float> make_anchors(int feat_w, int feat_h, int stride, const std::vector<float>& sizes,
                                const std::vector<float>& ratios, float offset) {
  std::vector<float> base;  // ratio-major, then size: torchvision's (w_ratios[:, None] * scales[None, :]).view(-1)
  for (float ar : ratios) {
    const float hr = std::sqrt(ar);
    const float wr = 1.f / hr;
    for (float s : sizes) {
      const float ws = wr * s, hs = hr * s;
      // np.round is round-half-to-even, as nearbyint in the default rounding mode
      base.push_back(std::nearbyint(-ws / 2.f));
      base.push_back(std::nearbyint(-hs / 2.f));
      base.push_back(std::nearbyint(ws / 2.f));
      base.push_back(std::nearbyint(hs / 2.f));
    }
  }
  const std::size_t a = base.size() / 4;
  std::vector<float> out(static_cast<std::size_t>(feat_w) * feat_h * a * 4);
  float* o = out.data();
  for (int y = 0; y < feat_h; ++y) {
    const float sy = (static_cast<float>(y) + offset) * static_cast<float>(stride);
    for (int x = 0; x < feat_w; ++x) {
      const float sx = (static_cast<float>(x) + offset) * static_cast<float>(stride);
      for (std::size_t k = 0; k < a; ++k) {
        *o++ = sx + base[4 * k + 0];
        *o++ = sy + base[4 * k + 1];
        *o++ = sx + base[4 * k + 2];
        *o++ = sy + base[4 * k + 3];
      }
    }
  }
  return out;
}

void decode_boxes(const float* ref, const float* d, std::size_t n, const float wt[4], float box_clip, float* out) {
  for (std::size_t i = 0; i < n; ++i, ref += 4, d += 4, out += 4) {
    const float widths = ref[2] - ref[0], heights = ref[3] - ref[1];
    const float ctr_x = ref[0] + 0.5f * widths, ctr_y = ref[1] + 0.5f * heights;
    const float dx = d[0] / wt[0], dy = d[1] / wt[1];
    const float dw = np_min(d[2] / wt[2], box_clip), dh = np_min(d[3] / wt[3], box_clip);
    const float pcx = dx * widths + ctr_x, pcy = dy * heights + ctr_y;
    const float pw = std::exp(dw) * widths, ph = std::exp(dh) * heights;
    const float cw = 0.5f * pw, ch = 0.5f * ph;
    out[0] = pcx - cw;
    out[1] = pcy - ch;
    out[2] = pcx + cw;
    out[3] = pcy + ch;
  }
}

// ---------------------------------------------------------------------------------------
// Proposals
// ---------------------------------------------------------------------------------------
Proposals select_proposals(const RpnPsroiConfig& cfg, const float* obj, const float* deltas, int num_anchors,
                           int feat_w, int feat_h, int in_w, int in_h) {
  const int a_cfg = static_cast<int>(cfg.anchor_sizes.size() * cfg.anchor_ratios.size());
  if (num_anchors != a_cfg)
    throw std::invalid_argument("objectness has " + std::to_string(num_anchors) + " channels; the config's " +
                                std::to_string(cfg.anchor_sizes.size()) + " sizes x " +
                                std::to_string(cfg.anchor_ratios.size()) + " ratios need " + std::to_string(a_cfg));
  if (feat_w != (in_w + cfg.stride - 1) / cfg.stride || feat_h != (in_h + cfg.stride - 1) / cfg.stride)
    throw std::invalid_argument("stage-1 maps are " + std::to_string(feat_w) + "x" + std::to_string(feat_h) + "; a " +
                                std::to_string(in_w) + "x" + std::to_string(in_h) + " input at stride " +
                                std::to_string(cfg.stride) + " needs ceil(size / stride)");
  const std::size_t hw = static_cast<std::size_t>(feat_w) * feat_h, n = hw * num_anchors;
  // logits and deltas in anchor order (y, x, a): the CHW maps transposed
  std::vector<float> logits(n), dl(4 * n);
  for (std::size_t p = 0; p < hw; ++p)
    for (int a = 0; a < num_anchors; ++a) {
      const std::size_t i = p * num_anchors + a;
      logits[i] = obj[a * hw + p];
      for (int k = 0; k < 4; ++k) dl[4 * i + k] = deltas[(4 * a + k) * hw + p];
    }
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) { return -logits[x] < -logits[y]; });
  order.resize(std::min<std::size_t>(order.size(), static_cast<std::size_t>(cfg.rpn_pre_nms_top_n)));
  const std::vector<float> anchors = make_anchors(feat_w, feat_h, cfg.stride, cfg.anchor_sizes, cfg.anchor_ratios,
                                                  cfg.anchor_offset);
  const float* w = cfg.rpn_box_weights.data();
  std::vector<Candidate> cand;
  cand.reserve(order.size());
  for (std::size_t i : order) {
    float b[4];
    decode_boxes(&anchors[4 * i], &dl[4 * i], 1, w, cfg.box_clip, b);
    clip_box(b, in_w, in_h);
    const float score = 1.f / (1.f + std::exp(-logits[i]));
    if (!big_enough(b, cfg.rpn_min_size) || !(score >= cfg.rpn_score_threshold)) continue;
    cand.push_back(Candidate{b[0], b[1], b[2], b[3], score, 0});
  }
  Proposals out;
  for (std::size_t k : nms(cand, cfg.rpn_nms_threshold, true, cfg.rpn_post_nms_top_n)) {
    const Candidate& c = cand[k];
    out.boxes.insert(out.boxes.end(), {c.x1, c.y1, c.x2, c.y2});
    out.scores.push_back(c.score);
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// PSRoIAlign (torchvision.ops.ps_roi_align, one image)
// ---------------------------------------------------------------------------------------
namespace {
// One bilinear sample of torchvision's bilinear_interpolate: the four corners and weights
// (w1 = hy * hx, ...), or none when the point lies outside [-1, h] x [-1, w].
struct Sample {
  int i1, i2, i3, i4;  // offsets into one channel plane
  float w1, w2, w3, w4;
  bool inside;
};

Sample sample_at(int h, int w, float y, float x) {
  Sample s{0, 0, 0, 0, 0.f, 0.f, 0.f, 0.f, false};
  if (!(y >= -1.0f && y <= static_cast<float>(h) && x >= -1.0f && x <= static_cast<float>(w))) return s;
  if (y <= 0) y = 0;
  if (x <= 0) x = 0;
  int y_low = static_cast<int>(y), x_low = static_cast<int>(x), y_high, x_high;
  if (y_low >= h - 1) {
    y_high = y_low = h - 1;
    y = static_cast<float>(y_low);
  } else {
    y_high = y_low + 1;
  }
  if (x_low >= w - 1) {
    x_high = x_low = w - 1;
    x = static_cast<float>(x_low);
  } else {
    x_high = x_low + 1;
  }
  const float ly = y - static_cast<float>(y_low), lx = x - static_cast<float>(x_low);
  const float hy = 1.f - ly, hx = 1.f - lx;
  s = Sample{y_low * w + x_low, y_low * w + x_high, y_high * w + x_low, y_high * w + x_high,
             hy * hx, hy * lx, ly * hx, ly * lx, true};
  return s;
}

int sample_grid(float roi_size, int pooled, int sampling_ratio) {
  return sampling_ratio > 0 ? sampling_ratio : static_cast<int>(std::ceil(roi_size / static_cast<float>(pooled)));
}
}  // namespace

void ps_roi_align(const float* feat, int channels, int h, int w, const float* rois, std::size_t k, float spatial_scale,
                  int pooled, int sampling_ratio, float* out) {
  const int p = pooled;
  if (p <= 0 || channels % (p * p))
    throw std::invalid_argument("PSRoIAlign input has " + std::to_string(channels) + " channels; it needs a multiple of " +
                                std::to_string(p) + "x" + std::to_string(p));
  const int c_out = channels / (p * p);
  const std::size_t plane = static_cast<std::size_t>(h) * w;
  std::vector<Sample> samples;
  for (std::size_t n = 0; n < k; ++n) {
    const float* r = rois + 4 * n;
    const float start_w = r[0] * spatial_scale - 0.5f, start_h = r[1] * spatial_scale - 0.5f;
    const float roi_w = (r[2] * spatial_scale - 0.5f) - start_w, roi_h = (r[3] * spatial_scale - 0.5f) - start_h;
    const float bin_w = roi_w / static_cast<float>(p), bin_h = roi_h / static_cast<float>(p);
    const int gh = sample_grid(roi_h, p, sampling_ratio), gw = sample_grid(roi_w, p, sampling_ratio);
    const float count = static_cast<float>(gh * gw);
    for (int i = 0; i < p; ++i)
      for (int j = 0; j < p; ++j) {
        // the sample points of bin (i, j) are the same for every group: computed once
        const float hstart = static_cast<float>(i) * bin_h + start_h;
        const float wstart = static_cast<float>(j) * bin_w + start_w;
        samples.clear();
        for (int iy = 0; iy < gh; ++iy) {
          const float y = hstart + static_cast<float>(iy + 0.5) * bin_h / static_cast<float>(gh);
          for (int ix = 0; ix < gw; ++ix) {
            const float x = wstart + static_cast<float>(ix + 0.5) * bin_w / static_cast<float>(gw);
            samples.push_back(sample_at(h, w, y, x));
          }
        }
        for (int c = 0; c < c_out; ++c) {
          const float* m = feat + static_cast<std::size_t>((c * p + i) * p + j) * plane;
          float acc = 0.f;  // summed in sample order, as torchvision
          for (const Sample& s : samples)
            acc += s.inside ? s.w1 * m[s.i1] + s.w2 * m[s.i2] + s.w3 * m[s.i3] + s.w4 * m[s.i4] : 0.f;
          out[((n * c_out + c) * p + i) * p + j] = acc / count;
        }
      }
  }
}

// ---------------------------------------------------------------------------------------
// Final detections
// ---------------------------------------------------------------------------------------
std::vector<Candidate> rcnn_detections(const RpnPsroiConfig& cfg, const float* rois, std::size_t k, const float* probs,
                                       const float* deltas, int in_w, int in_h) {
  const std::size_t c1 = static_cast<std::size_t>(cfg.num_classes) + 1;
  std::vector<Candidate> cand;
  for (std::size_t n = 0; n < k; ++n)
    for (std::size_t c = 1; c < c1; ++c) {  // proposal-major, then class; column 0 is the background
      const float score = probs[n * c1 + c];
      float b[4];
      // class-agnostic: one delta per RoI, the same box for every class
      const float* d = deltas + (cfg.class_agnostic_boxes ? n * 4 : (n * c1 + c) * 4);
      decode_boxes(rois + 4 * n, d, 1, cfg.rcnn_box_weights.data(), cfg.box_clip, b);
      clip_box(b, in_w, in_h);
      if (!(score > cfg.score_threshold) || !big_enough(b, cfg.min_size)) continue;
      cand.push_back(Candidate{b[0], b[1], b[2], b[3], score, static_cast<int>(c - 1)});
    }
  std::vector<Candidate> out;
  for (std::size_t i : nms(cand, cfg.nms_threshold, false, cfg.max_detections)) out.push_back(cand[i]);
  return out;
}

LITEDET_REGISTER_CONFIG_DUMP("rpn_psroi", RpnPsroiConfig, parse_rpn_psroi_config, LITEDET_RPN_PSROI_KEYS);

}  // namespace litedet
