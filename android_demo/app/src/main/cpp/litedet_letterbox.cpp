// litedet on-device letterbox geometry; see litedet_letterbox.h. Mirrors runtime/letterbox.py.
//
// Build with -ffp-contract=off and without -ffast-math (litedet_boxes.h).
#include "litedet_letterbox.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace litedet {

// ---------------------------------------------------------------------------------------
// Geometry
// ---------------------------------------------------------------------------------------
int resize_policy_code(const std::string& name) {
  if (name == "letterbox") return kLetterbox;
  if (name == "letterbox_top_left") return kLetterboxTopLeft;
  if (name == "stretch") return kStretch;
  if (name == "stretch_multiple") return kStretchMultiple;
  return -1;
}

Letterbox letterbox_geometry(int src_w, int src_h, int target, int multiple, bool fixed, int policy) {
  if (src_w <= 0 || src_h <= 0)
    throw std::invalid_argument("image size must be positive, got " + std::to_string(src_w) + "x" + std::to_string(src_h));
  if (target <= 0 || multiple <= 0 || target % multiple)
    throw std::invalid_argument("target " + std::to_string(target) + " must be a positive multiple of " +
                                std::to_string(multiple));
  if (policy != kLetterbox && policy != kLetterboxTopLeft && policy != kStretch && policy != kStretchMultiple)
    throw std::invalid_argument("resize policy " + std::to_string(policy) + " is unknown");
  if (policy == kStretch) {
    Letterbox lb;
    lb.src_w = src_w;
    lb.src_h = src_h;
    lb.resized_w = lb.resized_h = lb.in_w = lb.in_h = target;
    lb.pad_left = lb.pad_top = 0;
    return lb;
  }
  if (policy == kStretchMultiple) {
    const long long lng = std::max(src_w, src_h);
    long long w = src_w, h = src_h;
    if (lng > target) {
      w = std::max<long long>(1, static_cast<long long>(src_w) * target / lng);
      h = std::max<long long>(1, static_cast<long long>(src_h) * target / lng);
    }
    Letterbox lb;
    lb.src_w = src_w;
    lb.src_h = src_h;
    lb.resized_w = lb.in_w = static_cast<int>((w + multiple - 1) / multiple * multiple);
    lb.resized_h = lb.in_h = static_cast<int>((h + multiple - 1) / multiple * multiple);
    lb.pad_left = lb.pad_top = 0;
    return lb;
  }
  long long w, h;  // exact integer floor, as Python's //
  if (src_w >= src_h) {
    w = target;
    h = std::max<long long>(1, static_cast<long long>(src_h) * target / src_w);
  } else {
    w = std::max<long long>(1, static_cast<long long>(src_w) * target / src_h);
    h = target;
  }
  long long in_w, in_h;
  if (fixed) {
    in_w = in_h = target;
  } else {
    in_w = (w + multiple - 1) / multiple * multiple;
    in_h = (h + multiple - 1) / multiple * multiple;
  }
  Letterbox lb;
  lb.src_w = src_w;
  lb.src_h = src_h;
  lb.resized_w = static_cast<int>(w);
  lb.resized_h = static_cast<int>(h);
  lb.in_w = static_cast<int>(in_w);
  lb.in_h = static_cast<int>(in_h);
  lb.pad_left = policy == kLetterboxTopLeft ? 0 : static_cast<int>((in_w - w) / 2);
  lb.pad_top = policy == kLetterboxTopLeft ? 0 : static_cast<int>((in_h - h) / 2);
  return lb;
}

// ---------------------------------------------------------------------------------------
// Back to the original image
// ---------------------------------------------------------------------------------------
namespace {
// np.clip(v, 0, hi) as numpy computes it: min(max(v, lo), hi), NaN passes through.
inline float np_clip(float v, float hi) {
  float t = std::isnan(v) ? v : (v > 0.f ? v : 0.f);
  return std::isnan(t) ? t : (t < hi ? t : hi);
}
}  // namespace

Detection map_box_back(const Candidate& c, const Letterbox& lb) {
  const float sx = static_cast<float>(lb.resized_w) / static_cast<float>(lb.src_w);
  const float sy = static_cast<float>(lb.resized_h) / static_cast<float>(lb.src_h);
  const float pl = static_cast<float>(lb.pad_left), pt = static_cast<float>(lb.pad_top);
  const float w = static_cast<float>(lb.src_w), h = static_cast<float>(lb.src_h);
  Detection d;
  d.x1 = np_clip((c.x1 - pl) / sx, w);
  d.y1 = np_clip((c.y1 - pt) / sy, h);
  d.x2 = np_clip((c.x2 - pl) / sx, w);
  d.y2 = np_clip((c.y2 - pt) / sy, h);
  d.score = c.score;
  d.label = c.label;
  return d;
}

}  // namespace litedet
