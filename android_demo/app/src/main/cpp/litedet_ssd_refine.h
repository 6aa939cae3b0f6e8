// litedet on-device postprocessing of the 'ssd_refine' kind (RefineDet: the ARM refines the
// priors, the ODM classifies and regresses from the refined anchors), and its NAME.cfg reader.
// Plain C++17, no ncnn types. A line-by-line mirror of runtime/kinds/ssd_refine.py:
//   prior_boxes: per level (step s, min size m), per cell (row i, column j), per ratio 1, r, 1/r:
//     centre ((j + 0.5) / (in_w / s), (i + 0.5) / (in_h / s)), size (m / in_w * sqrt(r),
//     m / in_h / sqrt(r)) in double, then float, clamped to [0, 1] when clip;
//   decode_boxes on the priors with the ARM offsets, center_size, decode_boxes with the ODM offsets,
//     scaled to input pixels (float32, the same operations in the same order; exp is expf);
//   per foreground class: objectness > objectness_threshold and score > score_threshold (strict),
//     the pre_nms_top_k best (stable), classes concatenated in order; NMS (litedet_boxes.h) over
//     them, class-wise, max_detections kept; mapped back (label = ODM column - 1).
// Build with -ffp-contract=off and without -ffast-math.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "litedet_boxes.h"
#include "litedet_config_keys.h"
#include "litedet_kind.h"
#include "litedet_letterbox.h"

namespace litedet {

struct SsdRefineConfig {
#define LITEDET_CONFIG_MEMBER(key, type, lo, hi) cfg_##type key{};
  LITEDET_SSD_REFINE_KEYS(LITEDET_CONFIG_MEMBER)
#undef LITEDET_CONFIG_MEMBER
};

// NAME.cfg of kind ssd_refine; false and *error naming the key on a bad config.
bool parse_ssd_refine_config(const std::string& text, SsdRefineConfig& cfg, std::string* error);

// Number of priors of an in_w x in_h input: sum over steps of ceil(in_w/s) * ceil(in_h/s) x anchors.
size_t prior_count(int in_w, int in_h, const std::vector<int>& steps, size_t anchors_per_cell);

// [N x 4] priors (cx, cy, w, h), normalised to the input.
std::vector<float> prior_boxes(int in_w, int in_h, const std::vector<int>& steps, const std::vector<float>& min_sizes,
                               const std::vector<float>& aspect_ratios, bool clip);

// n offsets (4 each) on n centre-form boxes -> n corner boxes (x1 y1 x2 y2).
void decode_boxes(const float* loc, const float* priors, size_t n, float v0, float v1, float* out);
// n corner boxes -> centre form, in place allowed.
void center_size(const float* boxes, size_t n, float* out);

// The four outputs (rows x 4, rows x 2, rows x 4, rows x classes, row-major) -> candidates in
// input pixels with the ODM column - 1 as label, in the Python's order. Throws
// std::invalid_argument when rows is not the prior count, a value is not finite or a softmax
// output is outside [0, 1].
std::vector<Candidate> refined_candidates(const SsdRefineConfig& cfg, const float* arm_loc, const float* arm_conf,
                                          const float* odm_loc, const float* odm_conf, size_t rows, int classes,
                                          int in_w, int in_h);

std::vector<Detection> ssd_refine_outputs(const SsdRefineConfig& cfg, const float* arm_loc, const float* arm_conf,
                                          const float* odm_loc, const float* odm_conf, size_t rows, int classes,
                                          const Letterbox& lb);

}  // namespace litedet
