// extern "C" wrapper of the litedet postprocessing core, for ctypes (convert/verify/cpp_core.py)
// and desktop tests only; the Android app calls litedet_post.h directly through JNI.
//
// Every function returns 0 on success, or one of the LITEDET_E* codes with a NUL-terminated
// message written into err (truncated to err_len). No C++ exception crosses this boundary.
// The config always travels as the text of NAME.cfg, so parse_config runs on every call.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "litedet_kind.h"
#include "litedet_post.h"
#include "litedet_rpn_psroi.h"

namespace {

enum {
  LITEDET_OK = 0,
  LITEDET_EINVAL = 1,    // bad data (std::invalid_argument): Python raises ValueError
  LITEDET_ECONFIG = 2,   // parse_config failed
  LITEDET_ESPACE = 3,    // output buffer too small; *needed / *count says how much
  LITEDET_EINTERNAL = 4  // anything else
};

void set_err(char* err, size_t err_len, const std::string& msg) {
  if (!err || err_len == 0) return;
  size_t n = msg.size() < err_len - 1 ? msg.size() : err_len - 1;
  std::memcpy(err, msg.data(), n);
  err[n] = '\0';
}

std::string join_names(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
  return s;
}

template <class F>
int guarded(char* err, size_t err_len, F f) {
  try {
    return f();
  } catch (const std::invalid_argument& e) {
    set_err(err, err_len, e.what());
    return LITEDET_EINVAL;
  } catch (const std::exception& e) {
    set_err(err, err_len, std::string("internal error: ") + e.what());
    return LITEDET_EINTERNAL;
  } catch (...) {
    set_err(err, err_len, "internal error: unknown C++ exception");
    return LITEDET_EINTERNAL;
  }
}

// parse_config, with its message copied into err on failure.
bool parse(const char* cfg_text, litedet::Config& cfg, char* err, size_t err_len) {
  std::string error;
  if (litedet::parse_config(cfg_text ? cfg_text : "", cfg, &error)) return true;
  set_err(err, err_len, error);
  return false;
}

bool parse(const char* cfg_text, litedet::RpnPsroiConfig& cfg, char* err, size_t err_len) {
  std::string error;
  if (litedet::parse_rpn_psroi_config(cfg_text ? cfg_text : "", cfg, &error)) return true;
  set_err(err, err_len, error);
  return false;
}

int copy_out(const std::string& s, char* out, size_t out_len, size_t* needed, char* err, size_t err_len) {
  if (needed) *needed = s.size() + 1;
  if (!out || out_len < s.size() + 1) {
    set_err(err, err_len, "output buffer too small");
    return LITEDET_ESPACE;
  }
  std::memcpy(out, s.c_str(), s.size() + 1);
  return LITEDET_OK;
}

}  // namespace

extern "C" {

typedef struct {
  float x1, y1, x2, y2, score;
  int32_t label;
} litedet_detection;

typedef struct {
  int32_t src_w, src_h, resized_w, resized_h, in_w, in_h, pad_left, pad_top;
} litedet_letterbox;

// Bumped whenever a signature below changes; cpp_core.py refuses a mismatching library.
int litedet_abi_version(void) { return 4; }

// Parse cfg_text with the reader of the kind its kind= names (litedet_kind.h) and write the
// parsed config back as key=value text into out.
int litedet_config_dump(const char* cfg_text, char* out, size_t out_len, size_t* needed, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    const std::string text = cfg_text ? cfg_text : "";
    std::string kind, s, error;
    if (!litedet::config_kind(text, kind, &error)) {
      set_err(err, err_len, error);
      return static_cast<int>(LITEDET_ECONFIG);
    }
    const litedet::ConfigDump dump = litedet::config_dump(kind);
    if (!dump)
      error = kind.empty() ? "config key 'kind' is missing"
                           : "config key 'kind' is '" + kind + "'; the core reads kinds " +
                                 join_names(litedet::core_kind_names());
    if (!dump || !dump(text, s, &error)) {
      set_err(err, err_len, error);
      return static_cast<int>(LITEDET_ECONFIG);
    }
    return copy_out(s, out, out_len, needed, err, err_len);
  });
}

int litedet_letterbox_geometry(int src_w, int src_h, int target, int multiple, int fixed, int policy, litedet_letterbox* out,
                               char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    const litedet::Letterbox lb = litedet::letterbox_geometry(src_w, src_h, target, multiple, fixed != 0, policy);
    *out = litedet_letterbox{lb.src_w, lb.src_h, lb.resized_w, lb.resized_h, lb.in_w, lb.in_h, lb.pad_left, lb.pad_top};
    return static_cast<int>(LITEDET_OK);
  });
}

// logits: rows x 4*(reg_max+1) -> out: rows x 4.
int litedet_distribution_to_distance(const float* logits, int rows, int reg_max, float* out, char* err,
                                     size_t err_len) {
  return guarded(err, err_len, [&] {
    if (rows < 0 || reg_max < 0) throw std::invalid_argument("rows and reg_max must be >= 0");
    const size_t cols = 4 * (static_cast<size_t>(reg_max) + 1);
    for (size_t i = 0; i < static_cast<size_t>(rows); ++i)
      litedet::distribution_to_distance(logits + i * cols, reg_max, out + 4 * i);
    return static_cast<int>(LITEDET_OK);
  });
}

// boxes: n x 4 (x1 y1 x2 y2); writes the kept indices into keep (capacity n), their number into *count.
// max_detections < 0 means no limit.
int litedet_nms(const float* boxes, const float* scores, const int32_t* labels, int n, float iou_threshold,
                int class_agnostic, int max_detections, int64_t* keep, int* count, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    if (n < 0) throw std::invalid_argument("n must be >= 0");
    std::vector<litedet::Candidate> cand(static_cast<size_t>(n));
    for (size_t i = 0; i < cand.size(); ++i)
      cand[i] = litedet::Candidate{boxes[4 * i], boxes[4 * i + 1], boxes[4 * i + 2], boxes[4 * i + 3], scores[i], labels[i]};
    const int limit = max_detections < 0 ? (n > 0 ? n : 1) : max_detections;
    const std::vector<size_t> k = litedet::nms(cand, iou_threshold, class_agnostic != 0, limit);
    for (size_t i = 0; i < k.size(); ++i) keep[i] = static_cast<int64_t>(k[i]);
    *count = static_cast<int>(k.size());
    return static_cast<int>(LITEDET_OK);
  });
}

// The whole chain: cfg text + per-level raw outputs (in the config's stride order) -> detections.
int litedet_postprocess(const char* cfg_text, const litedet_letterbox* lb, int num_levels, const float* const* cls,
                        const float* const* dis, const int32_t* rows, const int32_t* strides, litedet_detection* out,
                        int capacity, int* count, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    litedet::Config cfg;
    if (!parse(cfg_text, cfg, err, err_len)) return static_cast<int>(LITEDET_ECONFIG);
    if (num_levels < 0) throw std::invalid_argument("num_levels must be >= 0");
    std::vector<litedet::LevelOutput> levels;
    for (int k = 0; k < num_levels; ++k) levels.push_back(litedet::LevelOutput{cls[k], dis[k], rows[k], strides[k]});
    const litedet::Letterbox g{lb->src_w, lb->src_h, lb->resized_w, lb->resized_h,
                               lb->in_w,  lb->in_h,  lb->pad_left,  lb->pad_top};
    const std::vector<litedet::Detection> dets = litedet::postprocess(cfg, levels, g);
    *count = static_cast<int>(dets.size());
    if (static_cast<int>(dets.size()) > capacity) {
      set_err(err, err_len, "detection buffer too small: " + std::to_string(dets.size()) + " detections");
      return static_cast<int>(LITEDET_ESPACE);
    }
    for (size_t i = 0; i < dets.size(); ++i)
      out[i] = litedet_detection{dets[i].x1, dets[i].y1, dets[i].x2, dets[i].y2, dets[i].score, dets[i].label};
    return static_cast<int>(LITEDET_OK);
  });
}

// ---- two-stage detectors (postprocess kind rpn_psroi) ----------------------------------

// out: feat_h * feat_w * ns * nr x 4.
int litedet_make_anchors(int feat_w, int feat_h, int stride, const float* sizes, int ns, const float* ratios, int nr,
                         float offset, float* out, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    if (feat_w < 0 || feat_h < 0 || ns < 0 || nr < 0) throw std::invalid_argument("sizes must be >= 0");
    const std::vector<float> a = litedet::make_anchors(feat_w, feat_h, stride, std::vector<float>(sizes, sizes + ns),
                                                       std::vector<float>(ratios, ratios + nr), offset);
    std::memcpy(out, a.data(), a.size() * sizeof(float));
    return static_cast<int>(LITEDET_OK);
  });
}

int litedet_decode_boxes(const float* ref, const float* deltas, int n, const float* weights, float box_clip, float* out,
                         char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    if (n < 0) throw std::invalid_argument("n must be >= 0");
    litedet::decode_boxes(ref, deltas, static_cast<size_t>(n), weights, box_clip, out);
    return static_cast<int>(LITEDET_OK);
  });
}

// obj: A x fh x fw, deltas: 4A x fh x fw -> boxes (capacity x 4) and scores; *count proposals.
int litedet_proposals(const char* cfg_text, const float* obj, const float* deltas, int num_anchors, int feat_w,
                      int feat_h, int in_w, int in_h, float* boxes, float* scores, int capacity, int* count, char* err,
                      size_t err_len) {
  return guarded(err, err_len, [&] {
    litedet::RpnPsroiConfig cfg;
    if (!parse(cfg_text, cfg, err, err_len)) return static_cast<int>(LITEDET_ECONFIG);
    const litedet::Proposals p = litedet::select_proposals(cfg, obj, deltas, num_anchors, feat_w, feat_h, in_w, in_h);
    *count = static_cast<int>(p.scores.size());
    if (*count > capacity) {
      set_err(err, err_len, "proposal buffer too small");
      return static_cast<int>(LITEDET_ESPACE);
    }
    std::memcpy(boxes, p.boxes.data(), p.boxes.size() * sizeof(float));
    std::memcpy(scores, p.scores.data(), p.scores.size() * sizeof(float));
    return static_cast<int>(LITEDET_OK);
  });
}

// feat: channels x h x w, rois: k x 4 -> out: k x (channels / pooled^2) x pooled x pooled.
int litedet_ps_roi_align(const float* feat, int channels, int h, int w, const float* rois, int k, float spatial_scale,
                         int pooled, int sampling_ratio, float* out, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    if (k < 0 || h <= 0 || w <= 0) throw std::invalid_argument("k must be >= 0 and the map non-empty");
    litedet::ps_roi_align(feat, channels, h, w, rois, static_cast<size_t>(k), spatial_scale, pooled, sampling_ratio, out);
    return static_cast<int>(LITEDET_OK);
  });
}

// The head's outputs for k proposals -> detections in original-image pixels (as litedet_postprocess).
int litedet_rcnn_detections(const char* cfg_text, const litedet_letterbox* lb, const float* rois, int k,
                            const float* probs, const float* deltas, litedet_detection* out, int capacity, int* count,
                            char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    litedet::RpnPsroiConfig cfg;
    if (!parse(cfg_text, cfg, err, err_len)) return static_cast<int>(LITEDET_ECONFIG);
    if (k < 0) throw std::invalid_argument("k must be >= 0");
    const litedet::Letterbox g{lb->src_w, lb->src_h, lb->resized_w, lb->resized_h,
                               lb->in_w,  lb->in_h,  lb->pad_left,  lb->pad_top};
    const std::vector<litedet::Candidate> c =
        litedet::rcnn_detections(cfg, rois, static_cast<size_t>(k), probs, deltas, g.in_w, g.in_h);
    *count = static_cast<int>(c.size());
    if (*count > capacity) {
      set_err(err, err_len, "detection buffer too small");
      return static_cast<int>(LITEDET_ESPACE);
    }
    for (size_t i = 0; i < c.size(); ++i) {
      const litedet::Detection d = litedet::map_box_back(c[i], g);
      out[i] = litedet_detection{d.x1, d.y1, d.x2, d.y2, d.score, d.label};
    }
    return static_cast<int>(LITEDET_OK);
  });
}

}  // extern "C"
