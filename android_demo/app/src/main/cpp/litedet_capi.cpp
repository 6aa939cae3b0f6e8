// extern "C" wrapper of the litedet C++ core, for ctypes (convert/verify/cpp_core.py) and
// desktop tests only; the Android app calls the core directly through JNI. This file holds the
// calls every kind shares (the ABI version, any kind's config dump, letterbox geometry, NMS);
// a kind's own steps are in its litedet_<kind>_capi.cpp. Conventions: litedet_capi.h.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "litedet_boxes.h"
#include "litedet_capi.h"
#include "litedet_kind.h"
#include "litedet_letterbox.h"

using namespace litedet_capi;

extern "C" {

// Bumped whenever a signature below changes; cpp_core.py refuses a mismatching library.
int litedet_abi_version(void) { return 6; }

// Parse cfg_text with the reader of the kind its kind= names (litedet_kind.h) and write the
// parsed config back as key=value text into out.
int litedet_config_dump(const char* cfg_text, char* out, size_t out_len, size_t* needed, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    const std::string text = cfg_text ? cfg_text : "";
    std::string kind, s, error;
    if (!litedet::config_kind(text, kind, &error)) {
      set_err(err, err_len, error);
      return static_cast<int>(LITEDET_ECONFIG);
    }
    const litedet::ConfigDump dump = litedet::config_dump(kind);
    if (!dump)
      error = kind.empty() ? "config key 'kind' is missing"
                           : "config key 'kind' is '" + kind + "'; the core reads kinds " +
                                 join_names(litedet::core_kind_names());
    if (!dump || !dump(text, s, &error)) {
      set_err(err, err_len, error);
      return static_cast<int>(LITEDET_ECONFIG);
    }
    return copy_out(s, out, out_len, needed, err, err_len);
  });
}

int litedet_letterbox_geometry(int src_w, int src_h, int target, int multiple, int fixed, int policy, litedet_letterbox* out,
                               char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    const litedet::Letterbox lb = litedet::letterbox_geometry(src_w, src_h, target, multiple, fixed != 0, policy);
    *out = litedet_letterbox{lb.src_w, lb.src_h, lb.resized_w, lb.resized_h, lb.in_w, lb.in_h, lb.pad_left, lb.pad_top};
    return static_cast<int>(LITEDET_OK);
  });
}

// boxes: n x 4 (x1 y1 x2 y2); writes the kept indices into keep (capacity n), their number into *count.
// max_detections < 0 means no limit.
int litedet_nms(const float* boxes, const float* scores, const int32_t* labels, int n, float iou_threshold,
                int class_agnostic, int max_detections, int64_t* keep, int* count, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    if (n < 0) throw std::invalid_argument("n must be >= 0");
    std::vector<litedet::Candidate> cand(static_cast<size_t>(n));
    for (size_t i = 0; i < cand.size(); ++i)
      cand[i] = litedet::Candidate{boxes[4 * i], boxes[4 * i + 1], boxes[4 * i + 2], boxes[4 * i + 3], scores[i], labels[i]};
    const int limit = max_detections < 0 ? (n > 0 ? n : 1) : max_detections;
    const std::vector<size_t> k = litedet::nms(cand, iou_threshold, class_agnostic != 0, limit);
    for (size_t i = 0; i < k.size(); ++i) keep[i] = static_cast<int64_t>(k[i]);
    *count = static_cast<int>(k.size());
    return static_cast<int>(LITEDET_OK);
  });
}

}  // extern "C"
