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

#include "litedet_post.h"

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

std::string fmt_float(float v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(v));  // round-trips a float
  return buf;
}

template <class T, class F>
std::string join(const std::vector<T>& v, F f) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + f(v[i]);
  return s;
}

// The parsed Config written back as key=value text (floats with 9 significant digits), one
// line per key of litedet_config_keys.h.
std::string dump_value(const std::string& v) { return v; }
std::string dump_value(int v) { return std::to_string(v); }
std::string dump_value(float v) { return fmt_float(v); }
std::string dump_value(bool v) { return v ? "1" : "0"; }
std::string dump_value(const std::vector<std::string>& v) { return join(v, [](const std::string& s) { return s; }); }
std::string dump_value(const std::vector<int>& v) { return join(v, [](int x) { return std::to_string(x); }); }
std::string dump_value(const std::vector<float>& v) { return join(v, fmt_float); }

std::string dump(const litedet::Config& c) {
  std::ostringstream o;
#define LITEDET_CONFIG_DUMP(key, type, lo, hi) o << #key "=" << dump_value(c.key) << "\n";
  LITEDET_CONFIG_KEYS(LITEDET_CONFIG_DUMP)
#undef LITEDET_CONFIG_DUMP
  return o.str();
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
int litedet_abi_version(void) { return 2; }

// Parse cfg_text and write the parsed config back as key=value text into out.
int litedet_config_dump(const char* cfg_text, char* out, size_t out_len, size_t* needed, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    litedet::Config cfg;
    if (!parse(cfg_text, cfg, err, err_len)) return static_cast<int>(LITEDET_ECONFIG);
    const std::string s = dump(cfg);
    if (needed) *needed = s.size() + 1;
    if (!out || out_len < s.size() + 1) {
      set_err(err, err_len, "output buffer too small");
      return static_cast<int>(LITEDET_ESPACE);
    }
    std::memcpy(out, s.c_str(), s.size() + 1);
    return static_cast<int>(LITEDET_OK);
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

}  // extern "C"
