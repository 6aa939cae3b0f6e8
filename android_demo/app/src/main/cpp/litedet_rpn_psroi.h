// litedet on-device core for two-stage detectors (postprocess kind 'rpn_psroi': ThunderNet,
// Light-Head R-CNN). Plain C++17, no ncnn types: the glue between the two ncnn graphs and
// the final decoding, a line-by-line mirror of runtime/kinds/rpn_psroi_ops.py and
// runtime/kinds/rpn_psroi.py, in the same order:
//
//   stage-1 outputs (objectness logits [A,H,W], deltas [4A,H,W], PS features [G*P*P,H,W])
//   -> anchors (torchvision's AnchorGenerator) -> the pre_nms_top_n best logits (stable:
//   lower anchor index first on ties) -> decode (BoxCoder, dw/dh clamped at box_clip) ->
//   sigmoid -> clip to the input -> min-size and score filters -> NMS -> post_nms_top_n
//   proposals -> PSRoIAlign (torchvision.ops.ps_roi_align, sampling_ratio samples per bin
//   side, adaptive when 0) -> the head graph on every RoI in one extract (layout
//   features_by_rois: a [G*P*P, N, 1] blob, its fcs are 1x1 convolutions) ->
//   softmax scores / class deltas -> decode per class, clip, drop background, score >
//   threshold, min size, per-class NMS, max_detections -> map back to the image.
//
// The conventions are written once, at the top of runtime/kinds/rpn_psroi_ops.py; the floating-point
// policy is litedet_boxes.h's (float everywhere numpy uses float32, same operation order,
// -ffp-contract=off, no fast-math). exp (decode, sigmoid) may differ from numpy's by an ulp;
// every other step is exact, so proposals, pooled features and detections match Python's to
// ~1e-5 with identical order and labels.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "litedet_boxes.h"
#include "litedet_config_keys.h"
#include "litedet_kind.h"
#include "litedet_letterbox.h"

namespace litedet {

// Everything from a two-stage NAME.cfg: one member per key of LITEDET_RPN_PSROI_KEYS.
struct RpnPsroiConfig {
#define LITEDET_TWO_STAGE_MEMBER(key, type, lo, hi) cfg_##type key{};
  LITEDET_RPN_PSROI_KEYS(LITEDET_TWO_STAGE_MEMBER)
#undef LITEDET_TWO_STAGE_MEMBER
};

// Every key required (plus version=LITEDET_CONFIG_VERSION and kind=rpn_psroi); false and *error naming the key on
// a missing, bad or inconsistent one.
bool parse_rpn_psroi_config(const std::string& text, RpnPsroiConfig& cfg, std::string* error);


// [fh * fw * A, 4] anchors, location-major (y, x), then ratio-major, then size.
std::vector<float> make_anchors(int feat_w, int feat_h, int stride, const std::vector<float>& sizes,
                                const std::vector<float>& ratios, float offset);

// n reference boxes + n deltas (x1 y1 x2 y2 / dx dy dw dh) -> n boxes (BoxCoder.decode_single).
void decode_boxes(const float* ref, const float* deltas, std::size_t n, const float weights[4], float box_clip,
                  float* out);

struct Proposals {
  std::vector<float> boxes;   // K x 4, network-input pixels, best first
  std::vector<float> scores;  // K objectness probabilities
};

// obj: A x fh x fw logits, deltas: 4A x fh x fw (channel a*4+k), both CHW as ncnn gives them.
// Throws std::invalid_argument when A or the sizes disagree with the config.
Proposals select_proposals(const RpnPsroiConfig& cfg, const float* obj, const float* deltas, int num_anchors,
                           int feat_w, int feat_h, int in_w, int in_h);

// feat: channels x h x w (channels = groups * pooled * pooled), rois: k x 4 input pixels
// -> out: k x groups x pooled x pooled.
void ps_roi_align(const float* feat, int channels, int h, int w, const float* rois, std::size_t k, float spatial_scale,
                  int pooled, int sampling_ratio, float* out);

// The head's outputs for k proposals -> detections in network-input pixels (labels from 0,
// background dropped), best first. probs: k x (C+1), deltas: k x 4(C+1), or k x 4 with
// class_agnostic_boxes.
std::vector<Candidate> rcnn_detections(const RpnPsroiConfig& cfg, const float* rois, std::size_t k, const float* probs,
                                       const float* deltas, int in_w, int in_h);

}  // namespace litedet
