// litedet on-device postprocessing of the 'gfl' kind; see litedet_gfl.h for the conventions.
// Mirrors runtime/kinds/gfl.py function by function.
//
// Build with -ffp-contract=off and without -ffast-math (litedet_boxes.h).
#include "litedet_gfl.h"

#include "litedet_config_reader.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <locale>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

namespace litedet {

// ---------------------------------------------------------------------------------------
// NAME.cfg
// ---------------------------------------------------------------------------------------
namespace {

const int kConfigVersion = LITEDET_CONFIG_VERSION;
using cfgread::Reader;

}  // namespace

bool parse_gfl_config(const std::string& text, GflConfig& cfg, std::string* error) {
  auto fail = [&](const std::string& msg) {
    if (error) *error = msg;
    return false;
  };
  std::map<std::string, std::string> kv;
  if (!cfgread::split_lines(text, kv, error)) return false;
  Reader r(std::move(kv));
  GflConfig c;
  long long version = r.integer("version", 0, 1 << 20);
  if (!r.has_error() && version != kConfigVersion)
    return fail("config key 'version' is " + std::to_string(version) + "; this litedet core reads version " +
                std::to_string(kConfigVersion));
  // the kind first: another kind's config would otherwise fail on its first missing key
  const std::string kind = r.str("kind");
  if (!r.has_error() && kind != "gfl")
    return fail("config key 'kind' is '" + kind + "'; parse_gfl_config reads 'gfl' configs (NanoDet); "
                "'rpn_psroi' configs are read by parse_rpn_psroi_config");
#define LITEDET_CONFIG_READ(key, type, lo, hi) c.key = r.read_##type(#key, lo, hi);
  LITEDET_GFL_KEYS(LITEDET_CONFIG_READ)
#undef LITEDET_CONFIG_READ
  if (r.has_error()) return fail(r.error);
  // what one key cannot say alone
  if (c.pixel_format != "bgr" && c.pixel_format != "rgb") r.bad("pixel_format", c.pixel_format, "'bgr' or 'rgb'");
  if (!precision_problem(c.precision).empty()) r.bad("precision", c.precision, precision_problem(c.precision));
  if (c.pad_mode != "stride_multiple" && c.pad_mode != "fixed")
    r.bad("pad_mode", c.pad_mode, "'stride_multiple' or 'fixed'");
  if (resize_policy_code(c.resize_policy) < 0)
    r.bad("resize_policy", c.resize_policy, "'letterbox', 'letterbox_top_left' or 'stretch'");
  if (r.has_error()) return fail(r.error);
  if (c.resize_policy == "stretch" && c.pad_mode != "fixed")
    return fail("config key 'resize_policy' is 'stretch', which fills target x target: 'pad_mode' must be 'fixed'");
  if (c.mean.size() != c.norm.size())
    return fail("config keys 'mean' and 'norm' have " + std::to_string(c.mean.size()) + " and " +
                std::to_string(c.norm.size()) + " values; they need one per channel each");
  if (c.target_size % c.pad_multiple)
    return fail("config key 'target_size' (" + std::to_string(c.target_size) + ") must be a multiple of 'pad_multiple' (" +
                std::to_string(c.pad_multiple) + ")");
  if (c.cls_blobs.size() != c.strides.size())
    return fail("config key 'cls_blobs' names " + std::to_string(c.cls_blobs.size()) + " blobs for " +
                std::to_string(c.strides.size()) + " strides");
  if (c.dis_blobs.size() != c.strides.size())
    return fail("config key 'dis_blobs' names " + std::to_string(c.dis_blobs.size()) + " blobs for " +
                std::to_string(c.strides.size()) + " strides");
  // a stride above pad_multiple (NanoDet-Plus's stride-64 level on a 32-padded input) gives
  // ceil(size / stride) cells, which postprocess counts the same way
  for (int stride : c.strides)
    if (c.pad_multiple % stride && stride % c.pad_multiple)
      return fail("config key 'pad_multiple' (" + std::to_string(c.pad_multiple) + ") and stride " +
                  std::to_string(stride) + " in 'strides' must divide one another");
  if (static_cast<long long>(c.class_names.size()) != c.num_classes)
    return fail("config key 'class_names' has " + std::to_string(c.class_names.size()) +
                " names but 'num_classes' is " + std::to_string(c.num_classes));
  cfg = std::move(c);
  return true;
}

// ---------------------------------------------------------------------------------------
// Decode
// ---------------------------------------------------------------------------------------
void distribution_to_distance(const float* logits, int reg_max, float out[4]) {
  const std::size_t bins = static_cast<std::size_t>(reg_max) + 1;
  // scratch: on the stack for the usual reg_max (7, 16), on the heap beyond
  float stack_buf[2 * 32];
  std::vector<float> heap_buf(bins > 32 ? 2 * bins : 0);
  float* e = bins > 32 ? heap_buf.data() : stack_buf;
  float* q = e + bins;
  for (int side = 0; side < 4; ++side) {
    const float* x = logits + static_cast<std::size_t>(side) * bins;
    float m = x[0];  // x.max(axis=2): NaN propagates, as in numpy
    for (std::size_t j = 1; j < bins && !std::isnan(m); ++j)
      if (std::isnan(x[j]) || x[j] > m) m = x[j];
    for (std::size_t j = 0; j < bins; ++j) e[j] = std::exp(x[j] - m);  // float overload: expf
    const float s = 0.f + pairwise_sum(e, bins);               // reduce starts from 0
    for (std::size_t j = 0; j < bins; ++j) q[j] = (e[j] / s) * static_cast<float>(j);
    out[side] = 0.f + pairwise_sum(q, bins);
  }
}

void decode_level(const float* scores, const float* dists, int rows, int num_classes, int feat_w, int stride,
                  int reg_max, float center_offset, float score_threshold, bool multi_label,
                  std::vector<Candidate>& out) {
  if (rows < 0 || num_classes <= 0 || feat_w <= 0 || reg_max < 0)
    throw std::invalid_argument("decode_level: rows, num_classes, feat_w and reg_max must be non-negative/positive");
  if (rows % feat_w)
    throw std::invalid_argument(std::to_string(rows) + " cells do not fill rows of width " + std::to_string(feat_w));
  const std::size_t n = static_cast<std::size_t>(rows) * static_cast<std::size_t>(num_classes);
  bool finite = true, in_range = true;
  for (std::size_t i = 0; i < n; ++i) {
    const float v = scores[i];
    if (!std::isfinite(v)) finite = false;
    else if (v < 0.f || v > 1.f) in_range = false;
  }
  if (!finite) throw std::invalid_argument("class scores contain NaN or inf; the network output is broken");
  if (!in_range)
    throw std::invalid_argument(
        "class scores are outside [0, 1]: the graph must apply the sigmoid (once); these look like raw logits");

  const float thr = score_threshold;
  const float off = center_offset;
  const float fstride = static_cast<float>(stride);
  const std::size_t dist_cols = 4 * (static_cast<std::size_t>(reg_max) + 1);
  auto emit = [&](int i, int label, float score) {
    const float cx = (static_cast<float>(i % feat_w) + off) * fstride;
    const float cy = (static_cast<float>(i / feat_w) + off) * fstride;
    float d[4];
    distribution_to_distance(dists + static_cast<std::size_t>(i) * dist_cols, reg_max, d);
    for (float& v : d) v = v * fstride;
    out.push_back(Candidate{cx - d[0], cy - d[1], cx + d[2], cy + d[3], score, label});
  };
  for (int i = 0; i < rows; ++i) {
    const float* s = scores + static_cast<std::size_t>(i) * static_cast<std::size_t>(num_classes);
    if (multi_label) {
      for (int c = 0; c < num_classes; ++c)
        if (s[c] > thr) emit(i, c, s[c]);
    } else {
      int best = 0;  // first maximum wins: strict '>'
      for (int c = 1; c < num_classes; ++c)
        if (s[c] > s[best]) best = c;
      if (s[best] > thr) emit(i, best, s[best]);
    }
  }
}

// ---------------------------------------------------------------------------------------
// The whole chain (runtime/kinds/gfl.py:postprocess_outputs)
// ---------------------------------------------------------------------------------------
std::vector<Detection> postprocess(const GflConfig& cfg, const std::vector<LevelOutput>& levels, const Letterbox& lb) {
  if (levels.size() != cfg.strides.size())
    throw std::invalid_argument("got " + std::to_string(levels.size()) + " output levels; the config has " +
                                std::to_string(cfg.strides.size()) + " strides");
  if (lb.in_w <= 0 || lb.in_h <= 0 || lb.src_w <= 0 || lb.src_h <= 0)
    throw std::invalid_argument("letterbox sizes must be positive");
  std::vector<Candidate> cand;
  for (std::size_t k = 0; k < levels.size(); ++k) {
    const LevelOutput& lv = levels[k];
    const int stride = cfg.strides[k];
    if (lv.stride != stride)
      throw std::invalid_argument("output level " + std::to_string(k) + " has stride " + std::to_string(lv.stride) +
                                  "; the config lists stride " + std::to_string(stride) + " there");
    const int feat_w = (lb.in_w + stride - 1) / stride, feat_h = (lb.in_h + stride - 1) / stride;
    if (static_cast<long long>(lv.rows) != static_cast<long long>(feat_w) * feat_h)
      throw std::invalid_argument("output '" + (k < cfg.cls_blobs.size() ? cfg.cls_blobs[k] : std::string("?")) +
                                  "' has " + std::to_string(lv.rows) + " rows; a " + std::to_string(lb.in_w) + "x" +
                                  std::to_string(lb.in_h) + " input at stride " + std::to_string(stride) + " needs " +
                                  std::to_string(feat_w * feat_h));
    if (lv.rows > 0 && (!lv.cls || !lv.dis))
      throw std::invalid_argument("output level " + std::to_string(k) + " has a null data pointer");
    decode_level(lv.cls, lv.dis, lv.rows, cfg.num_classes, feat_w, stride, cfg.reg_max, cfg.center_offset,
                 cfg.score_threshold, cfg.multi_label, cand);
  }
  if (cfg.clamp_to_input) {  // upstream's distance2bbox(..., max_shape): clip to the input before NMS
    const float iw = static_cast<float>(lb.in_w), ih = static_cast<float>(lb.in_h);
    for (Candidate& c : cand) {
      c.x1 = std::min(std::max(c.x1, 0.f), iw);
      c.x2 = std::min(std::max(c.x2, 0.f), iw);
      c.y1 = std::min(std::max(c.y1, 0.f), ih);
      c.y2 = std::min(std::max(c.y2, 0.f), ih);
    }
  }
  const std::vector<std::size_t> keep = nms(cand, cfg.nms_threshold, cfg.class_agnostic_nms, cfg.max_detections);
  std::vector<Detection> out;
  out.reserve(keep.size());
  for (std::size_t i : keep) out.push_back(map_box_back(cand[i], lb));
  return out;
}

bool try_postprocess(const GflConfig& cfg, const std::vector<LevelOutput>& levels, const Letterbox& lb,
                     std::vector<Detection>& out, std::string* error) noexcept {
  try {
    out = postprocess(cfg, levels, lb);
    return true;
  } catch (const std::exception& e) {
    if (error) *error = e.what();
  } catch (...) {
    if (error) *error = "unknown error in litedet::postprocess";
  }
  return false;
}

LITEDET_REGISTER_CONFIG_DUMP("gfl", GflConfig, parse_gfl_config, LITEDET_GFL_KEYS);

}  // namespace litedet
