// litedet on-device letterbox geometry: the network input of an image (resize policy, padding)
// and boxes mapped back to the original image's pixels. Plain C++17, no ncnn types. A
// line-by-line mirror of runtime/letterbox.py (letterbox_geometry, map_boxes_back).
#pragma once

#include <string>

#include "litedet_boxes.h"

namespace litedet {

struct Letterbox {
  int src_w, src_h, resized_w, resized_h, in_w, in_h, pad_left, pad_top;
};

// Long side to target, short side = max(1, floor(short * target / long)) in integer
// arithmetic, then centred padding to a multiple of `multiple` (or target x target when
// fixed). Throws std::invalid_argument on a non-positive size or target % multiple != 0.
// resize policies (config key resize_policy): centred letterbox, letterbox padded at the
// right/bottom only, and stretch to target x target (upstream NanoDet's val pipeline, keep_ratio on/off)
// stretch_multiple (segmentation): the image's own size (long side brought down to target when
// larger), each side rounded up to a multiple of `multiple`, stretched, no padding
enum ResizePolicy { kLetterbox = 0, kLetterboxTopLeft = 1, kStretch = 2, kStretchMultiple = 3 };
// The policy named by a config value; -1 when unknown.
int resize_policy_code(const std::string& name);
Letterbox letterbox_geometry(int src_w, int src_h, int target, int multiple, bool fixed, int policy = kLetterbox);

// Network-input pixels -> original-image pixels (per-axis scale resized/src), clipped
// to [0, src_w] x [0, src_h].
Detection map_box_back(const Candidate& c, const Letterbox& lb);

}  // namespace litedet
