// The C API of the 'argmax_mask' kind's steps (segmentation), for ctypes
// (convert/verify/cpp_argmax_mask.py). Conventions: litedet_capi.h.
#include <cstdint>
#include <string>
#include <vector>

#include "litedet_argmax_mask.h"
#include "litedet_capi.h"

using namespace litedet_capi;

extern "C" {

// cfg text + the logits (c x h x w, contiguous) -> the mask (src_h x src_w of lb) into out.
int litedet_segment(const char* cfg_text, const litedet_letterbox* lb, const float* logits, int c, int h, int w,
                    uint8_t* out, size_t capacity, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    litedet::ArgmaxMaskConfig cfg;
    if (!parse(litedet::parse_argmax_mask_config, cfg_text, cfg, err, err_len)) return static_cast<int>(LITEDET_ECONFIG);
    if (c <= 0 || h <= 0 || w <= 0) throw std::invalid_argument("logits must have a positive shape");
    const litedet::LabelMask m = litedet::segment_outputs(cfg, logits, c, h, w, static_cast<size_t>(h) * w, from_c(lb));
    if (m.labels.size() > capacity) {
      set_err(err, err_len, "mask buffer too small: " + std::to_string(m.labels.size()) + " pixels");
      return static_cast<int>(LITEDET_ESPACE);
    }
    std::copy(m.labels.begin(), m.labels.end(), out);
    return static_cast<int>(LITEDET_OK);
  });
}

// in_h x in_w labels of upsample_argmax (the pure step, for its tests).
int litedet_upsample_argmax(const float* logits, int c, int h, int w, int out_h, int out_w, uint8_t* out, char* err,
                            size_t err_len) {
  return guarded(err, err_len, [&] {
    if (c <= 0 || c > 256 || h <= 0 || w <= 0 || out_h <= 0 || out_w <= 0)
      throw std::invalid_argument("shapes must be positive and at most 256 classes");
    litedet::upsample_argmax(logits, c, h, w, static_cast<size_t>(h) * w, out_h, out_w, out);
    return static_cast<int>(LITEDET_OK);
  });
}

}  // extern "C"
