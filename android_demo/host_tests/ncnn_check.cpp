// Desktop driver for app/src/main/cpp/litedet_ncnn.cpp: the app's preprocessing,
// extraction, shape checks and postprocessing, run with a desktop ncnn on RGBA
// images, printing one detection per line. run_ncnn_check.sh compares the output
// with the Python runtime (litedet.runtime.Detector) on the same images.
//
// usage: ncnn_check ASSET_DIR NAME THREADS IMAGE.rgba W H [IMAGE.rgba W H ...]
//   ASSET_DIR holds NAME.cfg and the param/bin it names (as `litedet assets` writes);
//   IMAGE.rgba is raw RGBA8, W*H*4 bytes.
// output: "image INDEX COUNT" then "x1 y1 x2 y2 score label" lines; errors go to
// stderr with exit code 1.

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "litedet_ncnn.h"

static bool read_file(const std::string& path, std::string& out)
{
    std::ifstream f(path, std::ios::binary);
    if (!f)
        return false;
    out.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    return true;
}

int main(int argc, char** argv)
{
    if (argc < 7 || (argc - 4) % 3 != 0)
    {
        std::fprintf(stderr, "usage: %s ASSET_DIR NAME THREADS IMAGE.rgba W H [...]\n", argv[0]);
        return 2;
    }
    const std::string dir = argv[1];
    const std::string name = argv[2];
    const int threads = std::atoi(argv[3]);

    litedet_demo::NcnnDetector det;
    std::string err, text;
    if (!read_file(dir + "/" + name + ".cfg", text))
    {
        std::fprintf(stderr, "cannot read %s/%s.cfg\n", dir.c_str(), name.c_str());
        return 1;
    }
    if (!det.set_config(text, name + ".cfg", err) || !det.set_options(false, threads, err))
    {
        std::fprintf(stderr, "%s\n", err.c_str());
        return 1;
    }
    for (int g = 0; g < det.graph_count(); g++)  // stage 1, and the head of a two-stage model
    {
        const std::string param = dir + "/" + det.graph_param(g), bin = dir + "/" + det.graph_bin(g);
        if (det.net(g).load_param(param.c_str()) != 0 || det.net(g).load_model(bin.c_str()) != 0)
        {
            std::fprintf(stderr, "ncnn could not load %s / %s\n", param.c_str(), bin.c_str());
            return 1;
        }
    }
    if (!det.check_blobs(det.graph_param(0), err))
    {
        std::fprintf(stderr, "%s\n", err.c_str());
        return 1;
    }

    for (int i = 4, k = 0; i + 2 < argc; i += 3, k++)
    {
        std::string pixels;
        const int w = std::atoi(argv[i + 1]);
        const int h = std::atoi(argv[i + 2]);
        if (!read_file(argv[i], pixels) || (long long)pixels.size() != (long long)w * h * 4)
        {
            std::fprintf(stderr, "%s: cannot read %dx%d RGBA pixels\n", argv[i], w, h);
            return 1;
        }
        std::vector<litedet::Detection> dets;
        if (!det.detect((const unsigned char*)pixels.data(), w, h, w * 4, dets, err))
        {
            std::fprintf(stderr, "%s: %s\n", argv[i], err.c_str());
            return 1;
        }
        std::printf("image %d %d\n", k, (int)dets.size());
        for (const litedet::Detection& d : dets)
            std::printf("%.4f %.4f %.4f %.4f %.6f %d\n", d.x1, d.y1, d.x2, d.y2, d.score, d.label);
    }
    return 0;
}
