// litedet on-device postprocessing core: NanoDet (GFL) decode, NMS, letterbox geometry
// and the NAME.cfg reader. Plain C++17, no ncnn types, no third-party code: the same two
// files compile into the Android app (JNI), on a desktop and for aarch64 Linux.
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
// Floating point policy (how C++ stays equal to numpy):
//  - float (binary32) everywhere the Python uses float32, with the same operations in the
//    same order; thresholds/offsets are parsed as double and rounded to float once, like
//    np.float32(python_float);
//  - sums over the distance bins follow numpy's pairwise summation order exactly
//    (8 accumulators for 8..128 terms), so they round the same way;
//  - build with -ffp-contract=off and without -ffast-math: no FMA contraction (aarch64
//    GCC/Clang contract a*b+c into fmadd by default, which changes roundings), no
//    reassociation, NaN/inf semantics kept. convert/verify/cpp_core.py builds with these flags;
//    the Android CMakeLists must add them too (target_compile_options(... -ffp-contract=off)).
//  - the one operation that is not bit-identical is exp: numpy on x86 uses its own SIMD expf
//    (up to 2 ulp from libm expf), so a distance can differ by a few ulp (times the stride:
//    measured <= 5.3e-5 network-input pixels). Scores are copied, never recomputed, so they
//    are bit-identical, and so are the sort order and the NMS decisions except when an IoU
//    lies within an ulp of the threshold. Where exp is exact (one-hot bins) C++ == numpy bit
//    for bit, and the C++ built for aarch64 equals the C++ built for x86-64 bit for bit.
//    The parity tests (tests/test_cpp_parity.py) require identical detections (count,
//    labels, order), scores within 1e-4 and boxes within 1e-4 network-input pixels (plus
//    2 float32 ulps of the coordinate).
//
// Errors: parse_config returns false with a message naming the key. letterbox_geometry and
// postprocess throw std::invalid_argument (message mirrors the Python ValueError, e.g.
// "... the graph must apply the sigmoid ..."); try_postprocess is the non-throwing form
// (returns false and sets *error) for callers that prefer error codes (JNI).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "litedet_config_keys.h"

namespace litedet {

// Everything from NAME.cfg (written by litedet.runtime.devconfig.device_config_text): one
// member per key of litedet_config_keys.h, of the C++ type of the key's config type.
using cfg_str = std::string;
using cfg_names = std::vector<std::string>;
using cfg_labels = std::vector<std::string>;
using cfg_int = int;
using cfg_real = float;
using cfg_flag = bool;
using cfg_reals = std::vector<float>;
using cfg_ints = std::vector<int>;

struct Config {
#define LITEDET_CONFIG_MEMBER(key, type, lo, hi) cfg_##type key{};
  LITEDET_GFL_KEYS(LITEDET_CONFIG_MEMBER)
#undef LITEDET_CONFIG_MEMBER
};

// Parse the text of NAME.cfg: one key=value per line, '#' comments, lists comma-separated.
// Every key of Config is required (plus version=1); param_sha256/bin_sha256 and unknown keys
// are accepted and ignored. Returns false and sets *error (naming the key) on a missing, bad,
// duplicated or inconsistent key; cfg is only written on success.
bool parse_config(const std::string& text, Config& cfg, std::string* error);

// The value of the kind= key of any kind's NAME.cfg ("" when it has none): the postprocess kind
// whose key table the file follows.
std::string config_kind(const std::string& text);
// The same, false and *error (the line at fault) when the text is not key=value lines.
bool config_kind(const std::string& text, std::string& kind, std::string* error);

struct Letterbox {
  int src_w, src_h, resized_w, resized_h, in_w, in_h, pad_left, pad_top;
};

// Long side to target, short side = max(1, floor(short * target / long)) in integer
// arithmetic, then centred padding to a multiple of `multiple` (or target x target when
// fixed). Throws std::invalid_argument on a non-positive size or target % multiple != 0.
// resize policies (config key resize_policy): centred letterbox, letterbox padded at the
// right/bottom only, and stretch to target x target (upstream NanoDet's val pipeline, keep_ratio on/off)
enum ResizePolicy { kLetterbox = 0, kLetterboxTopLeft = 1, kStretch = 2 };
// The policy named by a config value; -1 when unknown.
int resize_policy_code(const std::string& name);
Letterbox letterbox_geometry(int src_w, int src_h, int target, int multiple, bool fixed, int policy = kLetterbox);

struct Detection {
  float x1, y1, x2, y2, score;
  int label;
};

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
std::vector<Detection> postprocess(const Config& cfg, const std::vector<LevelOutput>& levels, const Letterbox& lb);

// ---------------------------------------------------------------------------------------
// The pure steps, public so they can be tested and reused (same names as runtime/kinds/gfl.py:decode_level,
// runtime/boxes.py:box_iou, runtime/letterbox.py:map_boxes_back).

// Non-throwing postprocess: returns false and sets *error instead of throwing.
bool try_postprocess(const Config& cfg, const std::vector<LevelOutput>& levels, const Letterbox& lb,
                     std::vector<Detection>& out, std::string* error) noexcept;

// Candidate boxes in network-input pixels (x1 y1 x2 y2), before NMS.
struct Candidate {
  float x1, y1, x2, y2, score;
  int label;
};

// Sum of n floats (stride in elements) in numpy's pairwise order (np.add.reduce, float32).
float pairwise_sum(const float* a, std::size_t n, std::size_t stride = 1);

// logits: 4*(reg_max+1) values (l, t, r, b bins) -> 4 expected bin positions
// (softmax with max subtraction, then integral), float32 as numpy computes it.
void distribution_to_distance(const float* logits, int reg_max, float out[4]);

// Appends the candidates of one level to `out`. Throws std::invalid_argument when scores
// are not finite or outside [0, 1], or rows do not fill rows of width feat_w.
void decode_level(const float* scores, const float* dists, int rows, int num_classes, int feat_w,
                  int stride, int reg_max, float center_offset, float score_threshold,
                  bool multi_label, std::vector<Candidate>& out);

// IoU of two boxes (x1 y1 x2 y2), continuous coordinates, 0 when the union is not > 0.
float box_iou(const float* a, const float* b);

// Greedy NMS over candidates; returns kept indices in descending score order.
// max_detections <= 0 keeps nothing; use a value >= candidates.size() for "no limit".
std::vector<std::size_t> nms(const std::vector<Candidate>& candidates, float iou_threshold,
                             bool class_agnostic, int max_detections);

// Network-input pixels -> original-image pixels (per-axis scale resized/src), clipped
// to [0, src_w] x [0, src_h].
Detection map_box_back(const Candidate& c, const Letterbox& lb);

}  // namespace litedet
