// litedet on-device postprocessing of the 'gfl' kind (NanoDet, NanoDet-Plus): per-level
// decode of the class scores and the distance distributions, NMS, boxes back to the image,
// and its NAME.cfg reader. Plain C++17, no ncnn types, no third-party code: it compiles into
// the Android app (JNI), on a desktop and for aarch64 Linux (float policy: litedet_boxes.h).
//
// This is a line-by-line mirror of runtime/kinds/gfl.py:postprocess_outputs (with
// runtime/boxes.py:nms and runtime/letterbox.py:letterbox_geometry), in the same order:
//   per level (in cfg.strides order): check scores -> threshold (argmax or multi-label)
//   -> softmax + integral of the distance bins -> boxes in network-input pixels;
//   concatenate levels -> stable descending sort -> greedy NMS -> first max_detections
//   -> map back to the original image (per-axis scale resized/src) and clip.
//
// Conventions (the same as the Python, documented at the top of runtime/kinds/gfl.py and runtime/boxes.py):
//  - scores arrive with the sigmoid already applied by the graph; a score that is NaN/inf
//    or outside [0, 1] is an error (raw logits), never squashed a second time;
//  - argmax ties pick the lowest class (strict '>' scan); a score must be > threshold;
//  - multi_label: every (cell, class) with score > threshold, cell-major then class order;
//  - cell centre = (x + center_offset) * stride, x = row % W, y = row / W (row-major),
//    W = ceil(in_w / stride); boxes are l, t, r, b distances from the centre;
//  - NMS: std::stable_sort by descending score (equal scores keep input order), greedy,
//    suppress when IoU > nms_threshold (strict) on continuous coordinates
//    (area = (x2 - x1) * (y2 - y1)), only within a class unless class_agnostic_nms,
//    stop once max_detections are kept.
//
// Errors: parse_gfl_config returns false with a message naming the key. letterbox_geometry and
// postprocess throw std::invalid_argument (message mirrors the Python ValueError, e.g.
// "... the graph must apply the sigmoid ..."); try_postprocess is the non-throwing form
// (returns false and sets *error) for callers that prefer error codes (JNI).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "litedet_boxes.h"
#include "litedet_config_keys.h"
#include "litedet_kind.h"
#include "litedet_letterbox.h"

namespace litedet {

struct GflConfig {
#define LITEDET_CONFIG_MEMBER(key, type, lo, hi) cfg_##type key{};
  LITEDET_GFL_KEYS(LITEDET_CONFIG_MEMBER)
#undef LITEDET_CONFIG_MEMBER
};

// Parse the text of NAME.cfg: one key=value per line, '#' comments, lists comma-separated.
// Every key of GflConfig is required (plus version=LITEDET_CONFIG_VERSION); param_sha256/bin_sha256 and unknown keys
// are accepted and ignored. Returns false and sets *error (naming the key) on a missing, bad,
// duplicated or inconsistent key; cfg is only written on success.
bool parse_gfl_config(const std::string& text, GflConfig& cfg, std::string* error);

// One stride level: cls is rows x num_classes, dis is rows x 4*(reg_max+1), both row-major,
// row = y * W + x with W = ceil(in_w / stride).
struct LevelOutput {
  const float* cls;
  const float* dis;
  int rows;
  int stride;
};

// Raw outputs (one LevelOutput per cfg.strides entry, in that order) -> detections in
// original-image pixels, best first. Throws std::invalid_argument on bad input (scores not
// in [0, 1] or not finite, rows != W*H, levels not matching cfg.strides).
std::vector<Detection> postprocess(const GflConfig& cfg, const std::vector<LevelOutput>& levels, const Letterbox& lb);

// ---------------------------------------------------------------------------------------
// The pure steps, public so they can be tested and reused (same names as
// runtime/kinds/gfl.py:decode_level and distribution_to_distance).

// Non-throwing postprocess: returns false and sets *error instead of throwing.
bool try_postprocess(const GflConfig& cfg, const std::vector<LevelOutput>& levels, const Letterbox& lb,
                     std::vector<Detection>& out, std::string* error) noexcept;

// logits: 4*(reg_max+1) values (l, t, r, b bins) -> 4 expected bin positions
// (softmax with max subtraction, then integral), float32 as numpy computes it.
void distribution_to_distance(const float* logits, int reg_max, float out[4]);

// Appends the candidates of one level to `out`. Throws std::invalid_argument when scores
// are not finite or outside [0, 1], or rows do not fill rows of width feat_w.
void decode_level(const float* scores, const float* dists, int rows, int num_classes, int feat_w,
                  int stride, int reg_max, float center_offset, float score_threshold,
                  bool multi_label, std::vector<Candidate>& out);

}  // namespace litedet
