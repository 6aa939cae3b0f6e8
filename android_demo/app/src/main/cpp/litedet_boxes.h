// litedet on-device box maths, shared by every postprocess kind: candidates and detections,
// IoU, greedy NMS, numpy's pairwise float32 sum. Plain C++17, no ncnn types. A line-by-line
// mirror of runtime/boxes.py (box_iou, nms).
//
// NMS: std::stable_sort by descending score (equal scores keep input order), greedy,
// suppress when IoU > threshold (strict) on continuous coordinates (area = (x2 - x1) *
// (y2 - y1)), only within a class unless class_agnostic, stop once max_detections are kept.
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
#pragma once

#include <cstddef>
#include <vector>

namespace litedet {

struct Detection {
  float x1, y1, x2, y2, score;
  int label;
};

// Candidate boxes in network-input pixels (x1 y1 x2 y2), before NMS.
struct Candidate {
  float x1, y1, x2, y2, score;
  int label;
};

// Sum of n floats (stride in elements) in numpy's pairwise order (np.add.reduce, float32).
float pairwise_sum(const float* a, std::size_t n, std::size_t stride = 1);

// IoU of two boxes (x1 y1 x2 y2), continuous coordinates, 0 when the union is not > 0.
float box_iou(const float* a, const float* b);

// Greedy NMS over candidates; returns kept indices in descending score order.
// max_detections <= 0 keeps nothing; use a value >= candidates.size() for "no limit".
std::vector<std::size_t> nms(const std::vector<Candidate>& candidates, float iou_threshold,
                             bool class_agnostic, int max_detections);

}  // namespace litedet
