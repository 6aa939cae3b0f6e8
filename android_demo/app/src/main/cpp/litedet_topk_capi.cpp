// The C API of the 'topk' kind's steps (OneNet), for ctypes (convert/verify/cpp_topk.py).
// Conventions: litedet_capi.h.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "litedet_capi.h"
#include "litedet_topk.h"

using namespace litedet_capi;

extern "C" {

// c x n scores (contiguous) -> at most k flat indices into out, count set.
int litedet_top_scores(const float* scores, int c, size_t n, int k, float threshold, int64_t* out, int* count,
                       char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    if (c <= 0 || k < 0) throw std::invalid_argument("c must be positive and k >= 0");
    const std::vector<int64_t> idx = litedet::top_scores(scores, c, n, n, k, threshold);
    *count = static_cast<int>(idx.size());
    std::copy(idx.begin(), idx.end(), out);
    return static_cast<int>(LITEDET_OK);
  });
}

// The whole chain: cfg text + scores (c x h x w) and distances (4 x h x w), contiguous -> detections.
int litedet_topk(const char* cfg_text, const litedet_letterbox* lb, const float* scores, int c, int h, int w,
                 const float* ltrb, litedet_detection* out, int capacity, int* count, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    litedet::TopkConfig cfg;
    if (!parse(litedet::parse_topk_config, cfg_text, cfg, err, err_len)) return static_cast<int>(LITEDET_ECONFIG);
    if (c <= 0 || h <= 0 || w <= 0) throw std::invalid_argument("the maps must have a positive shape");
    const size_t n = static_cast<size_t>(h) * w;
    const std::vector<litedet::Detection> dets = litedet::topk_outputs(cfg, scores, c, h, w, n, ltrb, n, from_c(lb));
    return copy_detections(dets, out, capacity, count, err, err_len);
  });
}

}  // extern "C"
