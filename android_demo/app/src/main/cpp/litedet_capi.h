// Internal to the C API of the core (ctypes, convert/verify/cpp_core.py; desktop tests only):
// the return codes, the C records and the helpers every kind's C API file uses
// (litedet_capi.cpp for the shared calls, litedet_<kind>_capi.cpp for a kind's steps).
//
// Every function returns 0 on success, or one of the LITEDET_E* codes with a NUL-terminated
// message written into err (truncated to err_len). No C++ exception crosses this boundary.
// The config always travels as the text of NAME.cfg, so the kind's reader runs on every call.
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "litedet_letterbox.h"

namespace litedet_capi {

enum {
  LITEDET_OK = 0,
  LITEDET_EINVAL = 1,    // bad data (std::invalid_argument): Python raises ValueError
  LITEDET_ECONFIG = 2,   // the kind's config reader failed
  LITEDET_ESPACE = 3,    // output buffer too small; *needed / *count says how much
  LITEDET_EINTERNAL = 4  // anything else
};

inline void set_err(char* err, size_t err_len, const std::string& msg) {
  if (!err || err_len == 0) return;
  size_t n = msg.size() < err_len - 1 ? msg.size() : err_len - 1;
  std::memcpy(err, msg.data(), n);
  err[n] = '\0';
}

inline std::string join_names(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
  return s;
}

template <class F>
inline int guarded(char* err, size_t err_len, F f) {
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

// A kind's config reader (parse_<kind>_config), with its message copied into err on failure.
template <class Cfg>
inline bool parse(bool (*reader)(const std::string&, Cfg&, std::string*), const char* cfg_text, Cfg& cfg, char* err,
                  size_t err_len) {
  std::string error;
  if (reader(cfg_text ? cfg_text : "", cfg, &error)) return true;
  set_err(err, err_len, error);
  return false;
}

inline int copy_out(const std::string& s, char* out, size_t out_len, size_t* needed, char* err, size_t err_len) {
  if (needed) *needed = s.size() + 1;
  if (!out || out_len < s.size() + 1) {
    set_err(err, err_len, "output buffer too small");
    return LITEDET_ESPACE;
  }
  std::memcpy(out, s.c_str(), s.size() + 1);
  return LITEDET_OK;
}

}  // namespace litedet_capi

extern "C" {

typedef struct {
  float x1, y1, x2, y2, score;
  int32_t label;
} litedet_detection;

typedef struct {
  int32_t src_w, src_h, resized_w, resized_h, in_w, in_h, pad_left, pad_top;
} litedet_letterbox;

}  // extern "C"

namespace litedet_capi {

inline litedet::Letterbox from_c(const litedet_letterbox* lb) {
  return litedet::Letterbox{lb->src_w, lb->src_h, lb->resized_w, lb->resized_h, lb->in_w, lb->in_h, lb->pad_left, lb->pad_top};
}

inline litedet_detection to_c(const litedet::Detection& d) { return litedet_detection{d.x1, d.y1, d.x2, d.y2, d.score, d.label}; }

// A kind's detections into the caller's buffer: *count is always set; LITEDET_ESPACE (the count
// in err) when they do not fit, so the caller can retry with a buffer of *count.
inline int copy_detections(const std::vector<litedet::Detection>& dets, litedet_detection* out, int capacity,
                           int* count, char* err, size_t err_len) {
  *count = static_cast<int>(dets.size());
  if (static_cast<int>(dets.size()) > capacity) {
    set_err(err, err_len, "detection buffer too small: " + std::to_string(dets.size()) + " detections");
    return static_cast<int>(LITEDET_ESPACE);
  }
  for (size_t i = 0; i < dets.size(); ++i) out[i] = to_c(dets[i]);
  return static_cast<int>(LITEDET_OK);
}

}  // namespace litedet_capi
