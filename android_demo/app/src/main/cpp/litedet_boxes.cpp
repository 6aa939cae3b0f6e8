// litedet on-device box maths; see litedet_boxes.h. Mirrors runtime/boxes.py function by function.
//
// Build with -ffp-contract=off and without -ffast-math (see the header).
#include "litedet_boxes.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace litedet {

// ---------------------------------------------------------------------------------------
// numpy's float32 sum
// ---------------------------------------------------------------------------------------
float pairwise_sum(const float* a, std::size_t n, std::size_t stride) {
  // numpy's <TYPE>_pairwise_sum (loops_utils.h.src), operation for operation.
  if (n < 8) {
    float res = 0.f;
    for (std::size_t i = 0; i < n; ++i) res += a[i * stride];
    return res;
  }
  if (n <= 128) {
    float r[8];
    for (std::size_t k = 0; k < 8; ++k) r[k] = a[k * stride];
    std::size_t i = 8;
    for (; i < n - (n % 8); i += 8)
      for (std::size_t k = 0; k < 8; ++k) r[k] += a[(i + k) * stride];
    float res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i * stride];
    return res;
  }
  std::size_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise_sum(a, n2, stride) + pairwise_sum(a + n2 * stride, n - n2, stride);
}

// ---------------------------------------------------------------------------------------
// NMS
// ---------------------------------------------------------------------------------------
namespace {
// np.maximum / np.minimum: NaN propagates
inline float np_max(float a, float b) { return std::isnan(a) ? a : std::isnan(b) ? b : (a >= b ? a : b); }
inline float np_min(float a, float b) { return std::isnan(a) ? a : std::isnan(b) ? b : (a <= b ? a : b); }
}  // namespace

float box_iou(const float* a, const float* b) {
  const float iw = np_max(0.f, np_min(a[2], b[2]) - np_max(a[0], b[0]));
  const float ih = np_max(0.f, np_min(a[3], b[3]) - np_max(a[1], b[1]));
  const float inter = iw * ih;
  const float area_a = (a[2] - a[0]) * (a[3] - a[1]);
  const float area_b = (b[2] - b[0]) * (b[3] - b[1]);
  const float uni = area_a + area_b - inter;
  return uni > 0.f ? inter / uni : 0.f;
}

std::vector<std::size_t> nms(const std::vector<Candidate>& cand, float iou_threshold, bool class_agnostic,
                             int max_detections) {
  std::vector<std::size_t> keep;
  if (max_detections <= 0) return keep;
  const std::size_t n = cand.size();
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return cand[a].score > cand[b].score; });
  // structure of arrays in sorted order; area as box_iou computes it
  std::vector<float> x1(n), y1(n), x2(n), y2(n), area(n);
  std::vector<int> labels(n);
  for (std::size_t i = 0; i < n; ++i) {
    const Candidate& c = cand[order[i]];
    x1[i] = c.x1, y1[i] = c.y1, x2[i] = c.x2, y2[i] = c.y2, labels[i] = c.label;
    area[i] = (c.x2 - c.x1) * (c.y2 - c.y1);
  }
  // Greedy NMS decided lazily: a box is suppressed exactly when a box kept before it (boxes
  // that were suppressed suppress nothing) overlaps it by more than the threshold. So each
  // candidate, in score order, is tested against the boxes kept so far, and the scan stops
  // at max_detections: with 2000 RPN candidates and 200 kept that is a few tens of thousands
  // of IoUs instead of a million. box_iou(kept, candidate): the same operands, the same
  // float operations as the eager form and as the Python.
  const float thr = iou_threshold;
  std::vector<std::size_t> kept_at;  // positions (in score order) of the kept boxes
  for (std::size_t j = 0; j < n; ++j) {
    bool suppressed = false;
    for (std::size_t i : kept_at) {
      if (!class_agnostic && labels[i] != labels[j]) continue;
      const float iw = np_max(0.f, np_min(x2[i], x2[j]) - np_max(x1[i], x1[j]));
      const float ih = np_max(0.f, np_min(y2[i], y2[j]) - np_max(y1[i], y1[j]));
      const float inter = iw * ih;
      const float uni = area[i] + area[j] - inter;
      if ((uni > 0.f ? inter / uni : 0.f) > thr) {
        suppressed = true;
        break;
      }
    }
    if (suppressed) continue;
    kept_at.push_back(j);
    keep.push_back(order[j]);
    if (keep.size() >= static_cast<std::size_t>(max_detections)) break;
  }
  return keep;
}

}  // namespace litedet
