// litedet on-device postprocessing core; see litedet_post.h for the conventions and the
// floating-point policy. Mirrors runtime/kinds/gfl.py, runtime/boxes.py and runtime/letterbox.py function by function.
//
// Build with -ffp-contract=off and without -ffast-math (see the header).
#include "litedet_post.h"

#include "litedet_config_reader.h"
#include "litedet_kind.h"

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

bool config_kind(const std::string& text, std::string& kind, std::string* error) {
  std::map<std::string, std::string> kv;
  kind.clear();
  if (!cfgread::split_lines(text, kv, error)) return false;
  auto it = kv.find("kind");
  if (it != kv.end()) kind = cfgread::trim(it->second);
  return true;
}

std::string config_kind(const std::string& text) {
  std::string kind;
  return config_kind(text, kind, nullptr) ? kind : "";
}

bool parse_config(const std::string& text, Config& cfg, std::string* error) {
  auto fail = [&](const std::string& msg) {
    if (error) *error = msg;
    return false;
  };
  std::map<std::string, std::string> kv;
  if (!cfgread::split_lines(text, kv, error)) return false;
  Reader r(std::move(kv));
  Config c;
  long long version = r.integer("version", 0, 1 << 20);
  if (!r.has_error() && version != kConfigVersion)
    return fail("config key 'version' is " + std::to_string(version) + "; this litedet core reads version " +
                std::to_string(kConfigVersion));
  // the kind first: another kind's config would otherwise fail on its first missing key
  const std::string kind = r.str("kind");
  if (!r.has_error() && kind != "gfl")
    return fail("config key 'kind' is '" + kind + "'; parse_config reads 'gfl' configs (NanoDet); "
                "'rpn_psroi' configs are read by parse_rpn_psroi_config");
#define LITEDET_CONFIG_READ(key, type, lo, hi) c.key = r.read_##type(#key, lo, hi);
  LITEDET_GFL_KEYS(LITEDET_CONFIG_READ)
#undef LITEDET_CONFIG_READ
  if (r.has_error()) return fail(r.error);
  // what one key cannot say alone
  if (c.pixel_format != "bgr" && c.pixel_format != "rgb") r.bad("pixel_format", c.pixel_format, "'bgr' or 'rgb'");
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
// Geometry
// ---------------------------------------------------------------------------------------
int resize_policy_code(const std::string& name) {
  if (name == "letterbox") return kLetterbox;
  if (name == "letterbox_top_left") return kLetterboxTopLeft;
  if (name == "stretch") return kStretch;
  return -1;
}

Letterbox letterbox_geometry(int src_w, int src_h, int target, int multiple, bool fixed, int policy) {
  if (src_w <= 0 || src_h <= 0)
    throw std::invalid_argument("image size must be positive, got " + std::to_string(src_w) + "x" + std::to_string(src_h));
  if (target <= 0 || multiple <= 0 || target % multiple)
    throw std::invalid_argument("target " + std::to_string(target) + " must be a positive multiple of " +
                                std::to_string(multiple));
  if (policy != kLetterbox && policy != kLetterboxTopLeft && policy != kStretch)
    throw std::invalid_argument("resize policy " + std::to_string(policy) + " is unknown");
  if (policy == kStretch) {
    Letterbox lb;
    lb.src_w = src_w;
    lb.src_h = src_h;
    lb.resized_w = lb.resized_h = lb.in_w = lb.in_h = target;
    lb.pad_left = lb.pad_top = 0;
    return lb;
  }
  long long w, h;  // exact integer floor, as Python's //
  if (src_w >= src_h) {
    w = target;
    h = std::max<long long>(1, static_cast<long long>(src_h) * target / src_w);
  } else {
    w = std::max<long long>(1, static_cast<long long>(src_w) * target / src_h);
    h = target;
  }
  long long in_w, in_h;
  if (fixed) {
    in_w = in_h = target;
  } else {
    in_w = (w + multiple - 1) / multiple * multiple;
    in_h = (h + multiple - 1) / multiple * multiple;
  }
  Letterbox lb;
  lb.src_w = src_w;
  lb.src_h = src_h;
  lb.resized_w = static_cast<int>(w);
  lb.resized_h = static_cast<int>(h);
  lb.in_w = static_cast<int>(in_w);
  lb.in_h = static_cast<int>(in_h);
  lb.pad_left = policy == kLetterboxTopLeft ? 0 : static_cast<int>((in_w - w) / 2);
  lb.pad_top = policy == kLetterboxTopLeft ? 0 : static_cast<int>((in_h - h) / 2);
  return lb;
}

// ---------------------------------------------------------------------------------------
// Decode
// ---------------------------------------------------------------------------------------
float pairwise_sum(const float* a, std::size_t n, std::size_t stride) {
  // numpy's <TYPE>_pairwise_sum (loops_utils.h.src), operation for operation.
  if (n < 8) {
    float res = 0.f;
    for (std::size_t i = 0; i < n; ++i) res += a[i * stride];
    return res;
  }
  if (n <= 128) {
    float r[8];
    for (std::size_t k = 0; k < 8; ++k) r[k] = a[k * stride];
    std::size_t i = 8;
    for (; i < n - (n % 8); i += 8)
      for (std::size_t k = 0; k < 8; ++k) r[k] += a[(i + k) * stride];
    float res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i * stride];
    return res;
  }
  std::size_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise_sum(a, n2, stride) + pairwise_sum(a + n2 * stride, n - n2, stride);
}

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
// NMS
// ---------------------------------------------------------------------------------------
namespace {
// np.maximum / np.minimum: NaN propagates
inline float np_max(float a, float b) { return std::isnan(a) ? a : std::isnan(b) ? b : (a >= b ? a : b); }
inline float np_min(float a, float b) { return std::isnan(a) ? a : std::isnan(b) ? b : (a <= b ? a : b); }
}  // namespace

float box_iou(const float* a, const float* b) {
  const float iw = np_max(0.f, np_min(a[2], b[2]) - np_max(a[0], b[0]));
  const float ih = np_max(0.f, np_min(a[3], b[3]) - np_max(a[1], b[1]));
  const float inter = iw * ih;
  const float area_a = (a[2] - a[0]) * (a[3] - a[1]);
  const float area_b = (b[2] - b[0]) * (b[3] - b[1]);
  const float uni = area_a + area_b - inter;
  return uni > 0.f ? inter / uni : 0.f;
}

std::vector<std::size_t> nms(const std::vector<Candidate>& cand, float iou_threshold, bool class_agnostic,
                             int max_detections) {
  std::vector<std::size_t> keep;
  if (max_detections <= 0) return keep;
  const std::size_t n = cand.size();
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return cand[a].score > cand[b].score; });
  // structure of arrays in sorted order; area as box_iou computes it
  std::vector<float> x1(n), y1(n), x2(n), y2(n), area(n);
  std::vector<int> labels(n);
  for (std::size_t i = 0; i < n; ++i) {
    const Candidate& c = cand[order[i]];
    x1[i] = c.x1, y1[i] = c.y1, x2[i] = c.x2, y2[i] = c.y2, labels[i] = c.label;
    area[i] = (c.x2 - c.x1) * (c.y2 - c.y1);
  }
  // Greedy NMS decided lazily: a box is suppressed exactly when a box kept before it (boxes
  // that were suppressed suppress nothing) overlaps it by more than the threshold. So each
  // candidate, in score order, is tested against the boxes kept so far, and the scan stops
  // at max_detections: with 2000 RPN candidates and 200 kept that is a few tens of thousands
  // of IoUs instead of a million. box_iou(kept, candidate): the same operands, the same
  // float operations as the eager form and as the Python.
  const float thr = iou_threshold;
  std::vector<std::size_t> kept_at;  // positions (in score order) of the kept boxes
  for (std::size_t j = 0; j < n; ++j) {
    bool suppressed = false;
    for (std::size_t i : kept_at) {
      if (!class_agnostic && labels[i] != labels[j]) continue;
      const float iw = np_max(0.f, np_min(x2[i], x2[j]) - np_max(x1[i], x1[j]));
      const float ih = np_max(0.f, np_min(y2[i], y2[j]) - np_max(y1[i], y1[j]));
      const float inter = iw * ih;
      const float uni = area[i] + area[j] - inter;
      if ((uni > 0.f ? inter / uni : 0.f) > thr) {
        suppressed = true;
        break;
      }
    }
    if (suppressed) continue;
    kept_at.push_back(j);
    keep.push_back(order[j]);
    if (keep.size() >= static_cast<std::size_t>(max_detections)) break;
  }
  return keep;
}

// ---------------------------------------------------------------------------------------
// Back to the original image
// ---------------------------------------------------------------------------------------
namespace {
// np.clip(v, 0, hi) as numpy computes it: min(max(v, lo), hi), NaN passes through.
inline float np_clip(float v, float hi) {
  float t = std::isnan(v) ? v : (v > 0.f ? v : 0.f);
  return std::isnan(t) ? t : (t < hi ? t : hi);
}
}  // namespace

Detection map_box_back(const Candidate& c, const Letterbox& lb) {
  const float sx = static_cast<float>(lb.resized_w) / static_cast<float>(lb.src_w);
  const float sy = static_cast<float>(lb.resized_h) / static_cast<float>(lb.src_h);
  const float pl = static_cast<float>(lb.pad_left), pt = static_cast<float>(lb.pad_top);
  const float w = static_cast<float>(lb.src_w), h = static_cast<float>(lb.src_h);
  Detection d;
  d.x1 = np_clip((c.x1 - pl) / sx, w);
  d.y1 = np_clip((c.y1 - pt) / sy, h);
  d.x2 = np_clip((c.x2 - pl) / sx, w);
  d.y2 = np_clip((c.y2 - pt) / sy, h);
  d.score = c.score;
  d.label = c.label;
  return d;
}

// ---------------------------------------------------------------------------------------
// The whole chain (runtime/kinds/gfl.py:postprocess_outputs)
// ---------------------------------------------------------------------------------------
std::vector<Detection> postprocess(const Config& cfg, const std::vector<LevelOutput>& levels, const Letterbox& lb) {
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

bool try_postprocess(const Config& cfg, const std::vector<LevelOutput>& levels, const Letterbox& lb,
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

namespace {

// gfl's config written back, one line per key of LITEDET_GFL_KEYS.
bool dump_gfl_config(const std::string& text, std::string& out, std::string* error) {
  Config c;
  if (!parse_config(text, c, error)) return false;
  std::ostringstream o;
#define LITEDET_GFL_DUMP(key, type, lo, hi) o << #key "=" << cfgread::dump_value(c.key) << "\n";
  LITEDET_GFL_KEYS(LITEDET_GFL_DUMP)
#undef LITEDET_GFL_DUMP
  out = o.str();
  return true;
}

const bool kGflRegistered = register_config_dump("gfl", dump_gfl_config);

}  // namespace

}  // namespace litedet
