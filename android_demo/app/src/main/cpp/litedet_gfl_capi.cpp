// The C API of the 'gfl' kind's steps (NanoDet decode), for ctypes
// (convert/verify/cpp_gfl.py). Conventions: litedet_capi.h.
#include <cstdint>
#include <string>
#include <vector>

#include "litedet_capi.h"
#include "litedet_gfl.h"

using namespace litedet_capi;

extern "C" {

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

// The whole chain: cfg text + per-level raw outputs (in the config's stride order) -> detections.
int litedet_postprocess(const char* cfg_text, const litedet_letterbox* lb, int num_levels, const float* const* cls,
                        const float* const* dis, const int32_t* rows, const int32_t* strides, litedet_detection* out,
                        int capacity, int* count, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    litedet::GflConfig cfg;
    if (!parse(litedet::parse_gfl_config, cfg_text, cfg, err, err_len)) return static_cast<int>(LITEDET_ECONFIG);
    if (num_levels < 0) throw std::invalid_argument("num_levels must be >= 0");
    std::vector<litedet::LevelOutput> levels;
    for (int k = 0; k < num_levels; ++k) levels.push_back(litedet::LevelOutput{cls[k], dis[k], rows[k], strides[k]});
    const std::vector<litedet::Detection> dets = litedet::postprocess(cfg, levels, from_c(lb));
    return copy_detections(dets, out, capacity, count, err, err_len);
  });
}

}  // extern "C"
