// litedet on-device postprocessing of the 'ssd_refine' kind; see litedet_ssd_refine.h.
// Mirrors runtime/kinds/ssd_refine.py function by function.
//
// Build with -ffp-contract=off and without -ffast-math.
#include "litedet_ssd_refine.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "litedet_config_common.h"

namespace litedet {

bool parse_ssd_refine_config(const std::string& text, SsdRefineConfig& cfg, std::string* error) {
  auto fail = [&](const std::string& msg) {
    if (error) *error = msg;
    return false;
  };
  SsdRefineConfig c;
  auto read = [&](cfgread::Reader& r) {
#define LITEDET_SSD_READ(key, type, lo, hi) c.key = r.read_##type(#key, lo, hi);
    LITEDET_SSD_REFINE_KEYS(LITEDET_SSD_READ)
#undef LITEDET_SSD_READ
  };
  if (!read_kind_config(text, "ssd_refine", "parse_ssd_refine_config", read, error)) return false;
  const std::string common = common_config_problem(c);
  if (!common.empty()) return fail(common);
  if (c.steps.empty()) return fail("config key 'steps' is empty");
  if (c.min_sizes.size() != c.steps.size())
    return fail("config key 'min_sizes' has " + std::to_string(c.min_sizes.size()) + " values; 'steps' needs " +
                std::to_string(c.steps.size()));
  for (float m : c.min_sizes)
    if (!(m > 0.f)) return fail("config key 'min_sizes' must hold positive sizes");
  for (float r : c.aspect_ratios)
    if (!(r > 0.f)) return fail("config key 'aspect_ratios' must hold positive ratios");
  if (c.variances.size() != 2 || !(c.variances[0] > 0.f) || !(c.variances[1] > 0.f))
    return fail("config key 'variances' must hold two positive values (centre, size)");
  if (c.pad_multiple % *std::max_element(c.steps.begin(), c.steps.end()))
    return fail("config key 'pad_multiple' must be a multiple of the largest step");
  cfg = std::move(c);
  return true;
}

static int level_size(int in, int step) { return (in + step - 1) / step; }

size_t prior_count(int in_w, int in_h, const std::vector<int>& steps, size_t anchors_per_cell) {
  size_t n = 0;
  for (int s : steps) n += static_cast<size_t>(level_size(in_w, s)) * level_size(in_h, s);
  return n * anchors_per_cell;
}

std::vector<float> prior_boxes(int in_w, int in_h, const std::vector<int>& steps, const std::vector<float>& min_sizes,
                               const std::vector<float>& aspect_ratios, bool clip) {
  std::vector<float> out;
  for (size_t k = 0; k < steps.size(); ++k) {
    const int step = steps[k];
    const int fw = level_size(in_w, step), fh = level_size(in_h, step);
    const double fkx = static_cast<double>(in_w) / step, fky = static_cast<double>(in_h) / step;
    const double sx = static_cast<double>(min_sizes[k]) / in_w, sy = static_cast<double>(min_sizes[k]) / in_h;
    std::vector<std::pair<double, double>> sizes{{sx, sy}};
    for (float r : aspect_ratios) {
      const double q = std::sqrt(static_cast<double>(r));
      sizes.push_back({sx * q, sy / q});
      sizes.push_back({sx / q, sy * q});
    }
    for (int i = 0; i < fh; ++i)
      for (int j = 0; j < fw; ++j) {
        const double cx = (j + 0.5) / fkx, cy = (i + 0.5) / fky;
        for (const auto& s : sizes)
          for (double v : {cx, cy, s.first, s.second}) {
            float f = static_cast<float>(v);
            if (clip) f = std::min(std::max(f, 0.f), 1.f);
            out.push_back(f);
          }
      }
  }
  return out;
}

void decode_boxes(const float* loc, const float* priors, size_t n, float v0, float v1, float* out) {
  for (size_t i = 0; i < n; ++i) {
    const float* l = loc + 4 * i;
    const float* p = priors + 4 * i;
    const float cx = p[0] + l[0] * v0 * p[2], cy = p[1] + l[1] * v0 * p[3];
    const float w = p[2] * std::exp(l[2] * v1), h = p[3] * std::exp(l[3] * v1);
    const float x1 = cx - w / 2.f, y1 = cy - h / 2.f;
    float* o = out + 4 * i;
    o[0] = x1;
    o[1] = y1;
    o[2] = x1 + w;
    o[3] = y1 + h;
  }
}

void center_size(const float* boxes, size_t n, float* out) {
  for (size_t i = 0; i < n; ++i) {
    const float x1 = boxes[4 * i], y1 = boxes[4 * i + 1], x2 = boxes[4 * i + 2], y2 = boxes[4 * i + 3];
    out[4 * i] = (x2 + x1) / 2.f;
    out[4 * i + 1] = (y2 + y1) / 2.f;
    out[4 * i + 2] = x2 - x1;
    out[4 * i + 3] = y2 - y1;
  }
}

static void check_values(const float* x, size_t n, const char* role, bool probabilities) {
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i]))
      throw std::invalid_argument(std::string("output '") + role + "' holds a value that is not finite (NaN or inf): the graph is broken");
  }
  if (probabilities)
    for (size_t i = 0; i < n; ++i)
      if (x[i] < 0.f || x[i] > 1.f)
        throw std::invalid_argument(std::string("output '") + role + "' is outside [0, 1]: the graph must apply the softmax (once); these look like raw logits");
}

std::vector<Candidate> refined_candidates(const SsdRefineConfig& cfg, const float* arm_loc, const float* arm_conf,
                                          const float* odm_loc, const float* odm_conf, size_t rows, int classes,
                                          int in_w, int in_h) {
  const std::vector<float> priors = prior_boxes(in_w, in_h, cfg.steps, cfg.min_sizes, cfg.aspect_ratios, cfg.clip);
  const size_t n = priors.size() / 4;
  if (rows != n)
    throw std::invalid_argument("the outputs have " + std::to_string(rows) + " rows; the priors of a " +
                                std::to_string(in_w) + "x" + std::to_string(in_h) + " input are " + std::to_string(n));
  if (classes != cfg.num_classes + 1)
    throw std::invalid_argument("odm_conf has " + std::to_string(classes) + " columns; expected background + " +
                                std::to_string(cfg.num_classes) + " classes");
  check_values(arm_loc, n * 4, "arm_loc", false);
  check_values(arm_conf, n * 2, "arm_conf", true);
  check_values(odm_loc, n * 4, "odm_loc", false);
  check_values(odm_conf, n * static_cast<size_t>(classes), "odm_conf", true);
  const float v0 = cfg.variances[0], v1 = cfg.variances[1];
  std::vector<float> refined(n * 4), boxes(n * 4);
  decode_boxes(arm_loc, priors.data(), n, v0, v1, refined.data());
  center_size(refined.data(), n, refined.data());
  decode_boxes(odm_loc, refined.data(), n, v0, v1, boxes.data());
  const float fw = static_cast<float>(in_w), fh = static_cast<float>(in_h);
  for (size_t i = 0; i < n; ++i) {
    boxes[4 * i] *= fw;
    boxes[4 * i + 1] *= fh;
    boxes[4 * i + 2] *= fw;
    boxes[4 * i + 3] *= fh;
  }
  const float obj_thr = cfg.objectness_threshold, thr = cfg.score_threshold;
  std::vector<Candidate> out;
  std::vector<size_t> idx;
  for (int c = 1; c < classes; ++c) {
    idx.clear();
    for (size_t i = 0; i < n; ++i)
      if (arm_conf[2 * i + 1] > obj_thr && odm_conf[i * classes + c] > thr) idx.push_back(i);
    if (idx.size() > static_cast<size_t>(cfg.pre_nms_top_k)) {
      std::stable_sort(idx.begin(), idx.end(),
                       [&](size_t a, size_t b) { return odm_conf[a * classes + c] > odm_conf[b * classes + c]; });
      idx.resize(cfg.pre_nms_top_k);
    }
    for (size_t i : idx)
      out.push_back(Candidate{boxes[4 * i], boxes[4 * i + 1], boxes[4 * i + 2], boxes[4 * i + 3],
                              odm_conf[i * classes + c], c - 1});
  }
  return out;
}

std::vector<Detection> ssd_refine_outputs(const SsdRefineConfig& cfg, const float* arm_loc, const float* arm_conf,
                                          const float* odm_loc, const float* odm_conf, size_t rows, int classes,
                                          const Letterbox& lb) {
  const std::vector<Candidate> cand =
      refined_candidates(cfg, arm_loc, arm_conf, odm_loc, odm_conf, rows, classes, lb.in_w, lb.in_h);
  std::vector<Detection> dets;
  for (size_t k : nms(cand, cfg.nms_threshold, false, cfg.max_detections)) dets.push_back(map_box_back(cand[k], lb));
  return dets;
}

LITEDET_REGISTER_CONFIG_DUMP("ssd_refine", SsdRefineConfig, parse_ssd_refine_config, LITEDET_SSD_REFINE_KEYS);

}  // namespace litedet
