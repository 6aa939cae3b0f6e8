// litedet on-device postprocessing of the 'topk' kind; see litedet_topk.h.
// Mirrors runtime/kinds/topk.py function by function.
//
// Build with -ffp-contract=off and without -ffast-math.
#include "litedet_topk.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "litedet_config_common.h"

namespace litedet {

bool parse_topk_config(const std::string& text, TopkConfig& cfg, std::string* error) {
  auto fail = [&](const std::string& msg) {
    if (error) *error = msg;
    return false;
  };
  TopkConfig c;
  auto read = [&](cfgread::Reader& r) {
#define LITEDET_TOPK_READ(key, type, lo, hi) c.key = r.read_##type(#key, lo, hi);
    LITEDET_TOPK_KEYS(LITEDET_TOPK_READ)
#undef LITEDET_TOPK_READ
  };
  if (!read_kind_config(text, "topk", "parse_topk_config", read, error)) return false;
  const std::string common = common_config_problem(c);
  if (!common.empty()) return fail(common);
  if (c.pad_multiple % c.stride) return fail("config key 'pad_multiple' must be a multiple of 'stride'");
  cfg = std::move(c);
  return true;
}

std::vector<int64_t> top_scores(const float* scores, int c, size_t n, size_t cstep, int k, float threshold) {
  std::vector<int64_t> idx;
  bool bad = false;
  for (int ci = 0; ci < c; ++ci) {
    const float* p = scores + static_cast<size_t>(ci) * cstep;
    for (size_t i = 0; i < n; ++i) {
      const float v = p[i];
      bad |= !(v >= 0.f && v <= 1.f);  // NaN fails both
      if (v > threshold) idx.push_back(static_cast<int64_t>(ci) * static_cast<int64_t>(n) + static_cast<int64_t>(i));
    }
  }
  if (bad)
    throw std::invalid_argument("class scores are outside [0, 1] (or not finite): the graph must apply the sigmoid (once)");
  auto score = [&](int64_t f) { return scores[static_cast<size_t>(f / static_cast<int64_t>(n)) * cstep + f % static_cast<int64_t>(n)]; };
  auto better = [&](int64_t a, int64_t b) {
    const float sa = score(a), sb = score(b);
    return sa > sb || (sa == sb && a < b);
  };
  const size_t keep = std::min(idx.size(), static_cast<size_t>(std::max(k, 0)));
  std::partial_sort(idx.begin(), idx.begin() + keep, idx.end(), better);
  idx.resize(keep);
  return idx;
}

std::vector<Detection> topk_outputs(const TopkConfig& cfg, const float* scores, int c, int h, int w, size_t cstep,
                                    const float* ltrb, size_t ltrb_cstep, const Letterbox& lb) {
  const int s = cfg.stride;
  const int want_h = (lb.in_h + s - 1) / s, want_w = (lb.in_w + s - 1) / s;
  if (c != cfg.num_classes || h != want_h || w != want_w)
    throw std::invalid_argument("scores have shape (" + std::to_string(c) + ", " + std::to_string(h) + ", " +
                                std::to_string(w) + "); a " + std::to_string(lb.in_w) + "x" + std::to_string(lb.in_h) +
                                " input at stride " + std::to_string(s) + " needs (" + std::to_string(cfg.num_classes) +
                                ", " + std::to_string(want_h) + ", " + std::to_string(want_w) + ")");
  const size_t n = static_cast<size_t>(h) * w;
  for (int k = 0; k < 4; ++k) {
    const float* p = ltrb + static_cast<size_t>(k) * ltrb_cstep;
    for (size_t i = 0; i < n; ++i)
      if (!(p[i] >= 0.f) || std::isinf(p[i]))
        throw std::invalid_argument("box distances are negative or not finite: the graph must apply the ReLU to ltrb_pred");
  }
  const std::vector<int64_t> top = top_scores(scores, c, n, cstep, cfg.max_detections, cfg.score_threshold);
  const float st = static_cast<float>(s), off = cfg.center_offset;
  std::vector<Candidate> cand;
  cand.reserve(top.size());
  for (int64_t f : top) {
    const int cls = static_cast<int>(f / static_cast<int64_t>(n));
    const size_t cell = static_cast<size_t>(f % static_cast<int64_t>(n));
    const float cx = (static_cast<float>(cell % w) + off) * st, cy = (static_cast<float>(cell / w) + off) * st;
    const float* d = ltrb + cell;
    cand.push_back(Candidate{cx - d[0], cy - d[ltrb_cstep], cx + d[2 * ltrb_cstep], cy + d[3 * ltrb_cstep],
                             scores[static_cast<size_t>(cls) * cstep + cell], cls});
  }
  std::vector<Detection> dets;
  if (cfg.nms_threshold < 1.f) {
    for (size_t k : nms(cand, cfg.nms_threshold, false, cfg.max_detections)) dets.push_back(map_box_back(cand[k], lb));
  } else {
    for (const Candidate& cd : cand) dets.push_back(map_box_back(cd, lb));
  }
  return dets;
}

LITEDET_REGISTER_CONFIG_DUMP("topk", TopkConfig, parse_topk_config, LITEDET_TOPK_KEYS);

}  // namespace litedet
