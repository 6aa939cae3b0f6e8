// The postprocessing of the C++ core's 'argmax_mask' kind (what the phone runs after the graph:
// the argmax, with the bilinear upsample when the graph leaves it to the runtime, and the
// nearest map back to the frame), as a static aarch64 program for instruction counts under qemu
// (benchmarks/segmentation.py --qemu, through benchmarks/arm/cpp_glue.py's build and counter).
//
//   mask_post CFG LOGITS.bin IN_W IN_H load|run
//
// CFG is an argmax_mask NAME.cfg; LOGITS.bin the graph's output (float32, C x h x w) for an
// IN_W x IN_H input. The frame is taken to be the input itself (a frame of the input's size:
// the map back copies). ``load`` reads everything and stops; ``run`` also segments, so
// run - load counts the postprocessing alone.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "glue_io.h"
#include "litedet_argmax_mask.h"

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: %s CFG LOGITS.bin IN_W IN_H load|run\n", argv[0]);
    return 2;
  }
  litedet::ArgmaxMaskConfig cfg;
  std::string err;
  if (!litedet::parse_argmax_mask_config(read_text(argv[1]), cfg, &err)) {
    std::fprintf(stderr, "%s\n", err.c_str());
    return 1;
  }
  std::vector<float> logits;
  if (!read_floats(argv[2], logits)) {
    std::fprintf(stderr, "cannot read the logits\n");
    return 1;
  }
  const int in_w = std::atoi(argv[3]), in_h = std::atoi(argv[4]);
  const int s = cfg.head_stride, h = (in_h + s - 1) / s, w = (in_w + s - 1) / s;
  if (logits.size() != static_cast<size_t>(cfg.num_classes) * h * w) {
    std::fprintf(stderr, "the logits hold %zu values; expected %d x %d x %d\n", logits.size(), cfg.num_classes, h, w);
    return 1;
  }
  if (std::string(argv[5]) == "load") {
    std::printf("loaded %zu\n", logits.size());
    return 0;
  }
  const litedet::Letterbox lb{in_w, in_h, in_w, in_h, in_w, in_h, 0, 0};
  const litedet::LabelMask m =
      litedet::segment_outputs(cfg, logits.data(), cfg.num_classes, h, w, static_cast<size_t>(h) * w, lb);
  unsigned long long sum = 0;
  for (unsigned char v : m.labels) sum += v;
  std::printf("mask %dx%d label sum %llu\n", m.width, m.height, sum);
  return 0;
}
