// litedet on-device postprocessing of the 'argmax_mask' kind (semantic segmentation: BiSeNet,
// DFANet): per-class logits -> a class id per pixel of the original image, and its NAME.cfg
// reader. Plain C++17, no ncnn types. A line-by-line mirror of runtime/kinds/argmax_mask.py:
//   upsample=graph:   argmax_labels over the logits at the network input's size;
//   upsample=runtime: upsample_argmax: per output pixel the bilinear value of each class
//                     (align_corners false, taps of bilinear_taps), argmax while interpolating;
//   then map_mask_back: nearest, x_in = pad_left + floor(x * resized_w / src_w) in integers.
// Argmax ties pick the LOWEST class index (a strict '>' scan, as np.argmax); logits must be finite.
// Build with -ffp-contract=off and without -ffast-math: the interpolation is float32 as numpy's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "litedet_config_keys.h"
#include "litedet_kind.h"
#include "litedet_letterbox.h"

namespace litedet {

struct ArgmaxMaskConfig {
#define LITEDET_CONFIG_MEMBER(key, type, lo, hi) cfg_##type key{};
  LITEDET_ARGMAX_MASK_KEYS(LITEDET_CONFIG_MEMBER)
#undef LITEDET_CONFIG_MEMBER
};

// NAME.cfg of kind argmax_mask; false and *error naming the key on a bad config.
bool parse_argmax_mask_config(const std::string& text, ArgmaxMaskConfig& cfg, std::string* error);

// For each of out_size indices: the two source indices and the weight of the second.
void bilinear_taps(int out_size, int in_size, std::vector<int>& i0, std::vector<int>& i1, std::vector<float>& w1);

// logits: c planes of h x w floats, plane k at logits + k * cstep. out: out_h x out_w labels.
void upsample_argmax(const float* logits, int c, int h, int w, size_t cstep, int out_h, int out_w, uint8_t* out);
void argmax_labels(const float* logits, int c, int h, int w, size_t cstep, uint8_t* out);

// in_w x in_h labels -> the original image's lb.src_w x lb.src_h.
void map_mask_back(const uint8_t* labels, int in_w, const Letterbox& lb, uint8_t* out);

// The whole chain: the graph's logits (c x h x w, plane stride cstep) -> the mask in the original
// image's pixels (with the config's palette). Throws std::invalid_argument when c, h or w do not
// fit the config and the letterbox, or a logit is not finite.
LabelMask segment_outputs(const ArgmaxMaskConfig& cfg, const float* logits, int c, int h, int w, size_t cstep,
                          const Letterbox& lb);

}  // namespace litedet
