// litedet on-device postprocessing of the 'topk' kind (OneNet: end to end, no NMS), and its
// NAME.cfg reader. Plain C++17, no ncnn types. A line-by-line mirror of runtime/kinds/topk.py:
//   top_scores: over the C x H x W sigmoid scores, those > score_threshold (strict), the best
//     max_detections, highest first, equal scores in index order (index = c * H * W + y * W + x);
//   place_boxes: location ((x + center_offset) * stride, (y + center_offset) * stride), box =
//     location -/+ the distances (left, top, right, bottom);
//   NMS (litedet_boxes.h, class-wise) only when nms_threshold < 1; mapped back to the image.
// Scores outside [0, 1], negative distances and values that are not finite are refused.
// Build with -ffp-contract=off and without -ffast-math.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "litedet_boxes.h"
#include "litedet_config_keys.h"
#include "litedet_kind.h"
#include "litedet_letterbox.h"

namespace litedet {

struct TopkConfig {
#define LITEDET_CONFIG_MEMBER(key, type, lo, hi) cfg_##type key{};
  LITEDET_TOPK_KEYS(LITEDET_CONFIG_MEMBER)
#undef LITEDET_CONFIG_MEMBER
};

// NAME.cfg of kind topk; false and *error naming the key on a bad config.
bool parse_topk_config(const std::string& text, TopkConfig& cfg, std::string* error);

// scores: c planes of n values (plane k at scores + k * cstep) -> the flat indices (k * n + i) of
// the best k scores > threshold, best first, ties by index. Throws std::invalid_argument on a
// score outside [0, 1] (or NaN).
std::vector<int64_t> top_scores(const float* scores, int c, size_t n, size_t cstep, int k, float threshold);

// The whole chain: scores (c x h x w, plane stride cstep) and distances (4 x h x w, plane stride
// ltrb_cstep) -> detections in original-image pixels.
std::vector<Detection> topk_outputs(const TopkConfig& cfg, const float* scores, int c, int h, int w, size_t cstep,
                                    const float* ltrb, size_t ltrb_cstep, const Letterbox& lb);

}  // namespace litedet
