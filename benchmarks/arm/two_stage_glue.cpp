// The two-stage glue of the C++ core (what the phone runs between its two ncnn graphs),
// as a static aarch64 program for instruction counts under qemu (`litedet bench --qemu`, through
// benchmarks/arm/cpp_glue.py, which registers it for the rpn_psroi kind).
//
//   two_stage_glue CFG OBJ.bin DELTAS.bin FEAT.bin IN_W IN_H load|run
//
// CFG is a two-stage NAME.cfg; the .bin files are the stage-1 outputs (float32, CHW) of one
// image. ``load`` reads everything and stops; ``run`` also computes the proposals and their
// PSRoIAlign rows, so run - load counts the glue alone; ``print`` runs and prints every
// proposal and a checksum of the pooled rows in hexadecimal floats (exact: the aarch64 build
// must print what the x86-64 build prints, tests/test_two_stage.py).
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "glue_io.h"
#include "litedet_rpn_psroi.h"

int main(int argc, char** argv) {
  if (argc != 8) {
    std::fprintf(stderr, "usage: %s CFG OBJ.bin DELTAS.bin FEAT.bin IN_W IN_H load|run|print\n", argv[0]);
    return 2;
  }
  litedet::RpnPsroiConfig cfg;
  std::string err;
  if (!litedet::parse_rpn_psroi_config(read_text(argv[1]), cfg, &err)) {
    std::fprintf(stderr, "%s\n", err.c_str());
    return 1;
  }
  std::vector<float> obj, deltas, feat;
  if (!read_floats(argv[2], obj) || !read_floats(argv[3], deltas) || !read_floats(argv[4], feat)) {
    std::fprintf(stderr, "cannot read the stage-1 outputs\n");
    return 1;
  }
  const int in_w = std::atoi(argv[5]), in_h = std::atoi(argv[6]);
  const int fw = (in_w + cfg.stride - 1) / cfg.stride, fh = (in_h + cfg.stride - 1) / cfg.stride;
  const int a = static_cast<int>(cfg.anchor_sizes.size() * cfg.anchor_ratios.size());
  const int c = cfg.psroi_groups * cfg.pooled_size * cfg.pooled_size;
  const std::string mode = argv[7];
  if (mode == "load") {
    std::printf("loaded %zu %zu %zu\n", obj.size(), deltas.size(), feat.size());
    return 0;
  }
  const litedet::Proposals p = litedet::select_proposals(cfg, obj.data(), deltas.data(), a, fw, fh, in_w, in_h);
  std::vector<float> pooled(p.scores.size() * c);
  litedet::ps_roi_align(feat.data(), c, fh, fw, p.boxes.data(), p.scores.size(), 1.f / static_cast<float>(cfg.stride),
                        cfg.pooled_size, cfg.sampling_ratio, pooled.data());
  double sum = 0;
  for (float v : pooled) sum += v;
  std::printf("proposals %zu checksum %a\n", p.scores.size(), sum);
  if (mode == "print")
    for (size_t i = 0; i < p.scores.size(); ++i)
      std::printf("%a %a %a %a %a\n", p.boxes[4 * i], p.boxes[4 * i + 1], p.boxes[4 * i + 2], p.boxes[4 * i + 3],
                  p.scores[i]);
  return 0;
}
