// The postprocessing of the C++ core's single-graph detector kinds 'ssd_refine' (RefineDet) and
// 'topk' (OneNet), as a static aarch64 program for instruction counts under qemu (litedet bench
// --qemu and benchmarks/single_shot.py, through benchmarks/arm/cpp_glue.py's build and counter).
//
//   detect_post CFG ARM_LOC.bin ARM_CONF.bin ODM_LOC.bin ODM_CONF.bin IN_W IN_H load|run   (ssd_refine)
//   detect_post CFG SCORES.bin LTRB.bin IN_W IN_H load|run                                  (topk)
//
// The files are the graph's outputs (float32) for an IN_W x IN_H input; the frame is taken to be
// the input itself. ``load`` reads everything and stops; ``run`` also decodes, so run - load
// counts the postprocessing alone.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "glue_io.h"
#include "litedet_ssd_refine.h"
#include "litedet_topk.h"

static int report(const std::vector<litedet::Detection>& dets) {
  double sum = 0;
  for (const auto& d : dets) sum += d.score + d.x1 + d.y2;
  std::printf("detections %zu checksum %.6f\n", dets.size(), sum);
  return 0;
}

int main(int argc, char** argv) {
  if (argc != 9 && argc != 7) {
    std::fprintf(stderr, "usage: %s CFG OUTPUT.bin... IN_W IN_H load|run\n", argv[0]);
    return 2;
  }
  const std::string text = read_text(argv[1]);
  const int nfiles = argc - 5;
  std::vector<std::vector<float>> out(nfiles);
  for (int k = 0; k < nfiles; ++k)
    if (!read_floats(argv[2 + k], out[k])) {
      std::fprintf(stderr, "cannot read %s\n", argv[2 + k]);
      return 1;
    }
  const int in_w = std::atoi(argv[argc - 3]), in_h = std::atoi(argv[argc - 2]);
  if (std::string(argv[argc - 1]) == "load") {
    std::printf("loaded %zu\n", out[0].size());
    return 0;
  }
  const litedet::Letterbox lb{in_w, in_h, in_w, in_h, in_w, in_h, 0, 0};
  std::string err;
  try {
    if (nfiles == 4) {
      litedet::SsdRefineConfig cfg;
      if (!litedet::parse_ssd_refine_config(text, cfg, &err)) throw std::invalid_argument(err);
      const size_t rows = out[0].size() / 4;
      return report(litedet::ssd_refine_outputs(cfg, out[0].data(), out[1].data(), out[2].data(), out[3].data(), rows,
                                                cfg.num_classes + 1, lb));
    }
    litedet::TopkConfig cfg;
    if (!litedet::parse_topk_config(text, cfg, &err)) throw std::invalid_argument(err);
    const int h = (in_h + cfg.stride - 1) / cfg.stride, w = (in_w + cfg.stride - 1) / cfg.stride;
    const size_t n = static_cast<size_t>(h) * w;
    return report(litedet::topk_outputs(cfg, out[0].data(), cfg.num_classes, h, w, n, out[1].data(), n, lb));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
