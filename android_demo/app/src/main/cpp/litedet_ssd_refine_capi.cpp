// The C API of the 'ssd_refine' kind's steps (RefineDet), for ctypes
// (convert/verify/cpp_ssd_refine.py). Conventions: litedet_capi.h.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "litedet_capi.h"
#include "litedet_ssd_refine.h"

using namespace litedet_capi;

extern "C" {

// The priors of an in_w x in_h input: count x 4 floats into out (capacity floats).
int litedet_prior_boxes(const char* cfg_text, int in_w, int in_h, float* out, size_t capacity, size_t* count,
                        char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    litedet::SsdRefineConfig cfg;
    if (!parse(litedet::parse_ssd_refine_config, cfg_text, cfg, err, err_len)) return static_cast<int>(LITEDET_ECONFIG);
    if (in_w <= 0 || in_h <= 0) throw std::invalid_argument("the input size must be positive");
    const std::vector<float> p = litedet::prior_boxes(in_w, in_h, cfg.steps, cfg.min_sizes, cfg.aspect_ratios, cfg.clip);
    *count = p.size() / 4;
    if (p.size() > capacity) {
      set_err(err, err_len, "prior buffer too small: " + std::to_string(p.size() / 4) + " priors");
      return static_cast<int>(LITEDET_ESPACE);
    }
    std::copy(p.begin(), p.end(), out);
    return static_cast<int>(LITEDET_OK);
  });
}

// n offsets on n centre-form boxes -> corners (the pure step, for its tests).
int litedet_ssd_decode_boxes(const float* loc, const float* priors, size_t n, float v0, float v1, float* out, char* err,
                         size_t err_len) {
  return guarded(err, err_len, [&] {
    litedet::decode_boxes(loc, priors, n, v0, v1, out);
    return static_cast<int>(LITEDET_OK);
  });
}

// The whole chain: cfg text + the four outputs (rows each) -> detections.
int litedet_ssd_refine(const char* cfg_text, const litedet_letterbox* lb, const float* arm_loc, const float* arm_conf,
                       const float* odm_loc, const float* odm_conf, size_t rows, int classes, litedet_detection* out,
                       int capacity, int* count, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    litedet::SsdRefineConfig cfg;
    if (!parse(litedet::parse_ssd_refine_config, cfg_text, cfg, err, err_len)) return static_cast<int>(LITEDET_ECONFIG);
    const std::vector<litedet::Detection> dets =
        litedet::ssd_refine_outputs(cfg, arm_loc, arm_conf, odm_loc, odm_conf, rows, classes, from_c(lb));
    return copy_detections(dets, out, capacity, count, err, err_len);
  });
}

}  // extern "C"
