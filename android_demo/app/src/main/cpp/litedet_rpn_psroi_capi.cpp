// The C API of the 'rpn_psroi' kind's steps (ThunderNet, Light-Head R-CNN: anchors, proposals,
// PSRoIAlign, R-CNN detections), for ctypes (convert/verify/cpp_rpn_psroi.py).
// Conventions: litedet_capi.h.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "litedet_capi.h"
#include "litedet_rpn_psroi.h"

using namespace litedet_capi;

extern "C" {

// out: feat_h * feat_w * ns * nr x 4.
int litedet_make_anchors(int feat_w, int feat_h, int stride, const float* sizes, int ns, const float* ratios, int nr,
                         float offset, float* out, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    if (feat_w < 0 || feat_h < 0 || ns < 0 || nr < 0) throw std::invalid_argument("sizes must be >= 0");
    const std::vector<float> a = litedet::make_anchors(feat_w, feat_h, stride, std::vector<float>(sizes, sizes + ns),
                                                       std::vector<float>(ratios, ratios + nr), offset);
    std::memcpy(out, a.data(), a.size() * sizeof(float));
    return static_cast<int>(LITEDET_OK);
  });
}

int litedet_decode_boxes(const float* ref, const float* deltas, int n, const float* weights, float box_clip, float* out,
                         char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    if (n < 0) throw std::invalid_argument("n must be >= 0");
    litedet::decode_boxes(ref, deltas, static_cast<size_t>(n), weights, box_clip, out);
    return static_cast<int>(LITEDET_OK);
  });
}

// obj: A x fh x fw, deltas: 4A x fh x fw -> boxes (capacity x 4) and scores; *count proposals.
int litedet_proposals(const char* cfg_text, const float* obj, const float* deltas, int num_anchors, int feat_w,
                      int feat_h, int in_w, int in_h, float* boxes, float* scores, int capacity, int* count, char* err,
                      size_t err_len) {
  return guarded(err, err_len, [&] {
    litedet::RpnPsroiConfig cfg;
    if (!parse(litedet::parse_rpn_psroi_config, cfg_text, cfg, err, err_len)) return static_cast<int>(LITEDET_ECONFIG);
    const litedet::Proposals p = litedet::select_proposals(cfg, obj, deltas, num_anchors, feat_w, feat_h, in_w, in_h);
    *count = static_cast<int>(p.scores.size());
    if (*count > capacity) {
      set_err(err, err_len, "proposal buffer too small");
      return static_cast<int>(LITEDET_ESPACE);
    }
    std::memcpy(boxes, p.boxes.data(), p.boxes.size() * sizeof(float));
    std::memcpy(scores, p.scores.data(), p.scores.size() * sizeof(float));
    return static_cast<int>(LITEDET_OK);
  });
}

// feat: channels x h x w, rois: k x 4 -> out: k x (channels / pooled^2) x pooled x pooled.
int litedet_ps_roi_align(const float* feat, int channels, int h, int w, const float* rois, int k, float spatial_scale,
                         int pooled, int sampling_ratio, float* out, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    if (k < 0 || h <= 0 || w <= 0) throw std::invalid_argument("k must be >= 0 and the map non-empty");
    litedet::ps_roi_align(feat, channels, h, w, rois, static_cast<size_t>(k), spatial_scale, pooled, sampling_ratio, out);
    return static_cast<int>(LITEDET_OK);
  });
}

// The head's outputs for k proposals -> detections in original-image pixels (as litedet_postprocess).
int litedet_rcnn_detections(const char* cfg_text, const litedet_letterbox* lb, const float* rois, int k,
                            const float* probs, const float* deltas, litedet_detection* out, int capacity, int* count,
                            char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    litedet::RpnPsroiConfig cfg;
    if (!parse(litedet::parse_rpn_psroi_config, cfg_text, cfg, err, err_len)) return static_cast<int>(LITEDET_ECONFIG);
    if (k < 0) throw std::invalid_argument("k must be >= 0");
    const litedet::Letterbox g = from_c(lb);
    const std::vector<litedet::Candidate> c =
        litedet::rcnn_detections(cfg, rois, static_cast<size_t>(k), probs, deltas, g.in_w, g.in_h);
    *count = static_cast<int>(c.size());
    if (*count > capacity) {
      set_err(err, err_len, "detection buffer too small");
      return static_cast<int>(LITEDET_ESPACE);
    }
    for (size_t i = 0; i < c.size(); ++i) {
      out[i] = to_c(litedet::map_box_back(c[i], g));
    }
    return static_cast<int>(LITEDET_OK);
  });
}

}  // extern "C"
