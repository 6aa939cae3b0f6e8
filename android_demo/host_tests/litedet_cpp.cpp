// litedet_cpp: the app's own C++ pipeline (app/src/main/cpp/litedet_ncnn.cpp: preprocessing,
// ncnn extraction of every graph, the C++ postprocessing core) as a desktop / board / phone
// program, linked against the real ncnn library (scripts/setup_ncnn_lib.sh).
//
//   litedet_cpp detect ASSETS IMAGE [IMAGE ...] [--threads N] [--fp32] [--masks DIR]
//   litedet_cpp bench  ASSETS IMAGE [--threads N] [--fp32] [--runs N] [--warmup N]
//   litedet_cpp serve  ASSETS IMAGE [--threads N] [--fp32]
//
// ASSETS is NAME.cfg, or a directory holding exactly one NAME.cfg and the param/bin files it
// names: what `litedet assets BUNDLE DIR` writes and the app reads. IMAGE is JPEG, PNG,
// BMP or PPM, read with ncnn's own imread (stb_image), converted to RGBA as the camera path
// delivers it. fp16 storage + arithmetic are on unless --fp32.
//
// detect prints one JSON object per image: {"image", "width", "height", "input": [w, h],
//   "detections": [[x1, y1, x2, y2, score, label], ...]}, and for a segmentation model (kind
//   argmax_mask) "mask": {"width", "height", "pixels": [count of class 0, 1, ...]}; with --masks DIR
//   each image's mask is also written as DIR/IMAGE_STEM.pgm (8-bit, pixel value = class id).
// bench prints one JSON object in litedet bench's record schema (runtime "litedet_cpp"):
//   warm-up runs, then N timed runs of the whole pipeline; min/median/max of the total and of
//   each stage (pre, inference, glue, post), the detections of the last run, peak RSS.
// serve loads once, prints {"ready": ...}, then runs the pipeline once per "run" line on stdin and
//   prints that run's {"total", "pre", "inference", "glue", "post"} (ms), so litedet bench can
//   interleave it with its other runtimes; at end of input it prints {"peak_rss_bytes"}.
// Errors: one line on stderr, exit 1 (2 for usage).

#include <sys/resource.h>
#include <sys/utsname.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "simpleocv.h"

#include "litedet_ncnn.h"

namespace {

const char* USAGE =
    "usage: litedet_cpp detect ASSETS IMAGE [IMAGE ...] [--threads N] [--fp32] [--masks DIR]\n"
    "       litedet_cpp bench  ASSETS IMAGE [--threads N] [--fp32] [--runs N] [--warmup N]\n"
    "       litedet_cpp serve  ASSETS IMAGE [--threads N] [--fp32]   (one run per 'run' line on stdin)\n"
    "ASSETS: NAME.cfg, or a directory with one NAME.cfg (litedet assets BUNDLE DIR)\n";

bool read_file(const std::string& path, std::string& out)
{
    std::ifstream f(path, std::ios::binary);
    if (!f)
        return false;
    out.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    return true;
}

bool ends_with(const std::string& s, const std::string& tail)
{
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

bool is_dir(const std::string& p)
{
    DIR* d = opendir(p.c_str());
    if (d)
        closedir(d);
    return d != nullptr;
}

// ASSETS -> (directory, NAME); err says what is there instead.
bool resolve_assets(const std::string& assets, std::string& dir, std::string& name, std::string& err)
{
    if (ends_with(assets, ".cfg"))
    {
        const size_t slash = assets.find_last_of('/');
        dir = slash == std::string::npos ? "." : assets.substr(0, slash);
        name = assets.substr(slash == std::string::npos ? 0 : slash + 1);
        name.resize(name.size() - 4);
        return true;
    }
    DIR* d = opendir(assets.c_str());
    if (!d)
    {
        err = assets + ": not a directory or a NAME.cfg file";
        return false;
    }
    std::vector<std::string> cfgs;
    bool manifest = false;
    while (dirent* e = readdir(d))
    {
        const std::string f = e->d_name;
        if (ends_with(f, ".cfg"))
            cfgs.push_back(f.substr(0, f.size() - 4));
        manifest = manifest || f == "manifest.json";
    }
    closedir(d);
    std::sort(cfgs.begin(), cfgs.end());
    if (cfgs.size() == 1)
    {
        dir = assets;
        name = cfgs[0];
        return true;
    }
    if (cfgs.empty())
        err = assets + (manifest ? " is a litedet bundle, not device assets: write them with "
                                   "`litedet assets " + assets + " DIR` and pass DIR"
                                 : " holds no NAME.cfg: pass the directory `litedet assets BUNDLE DIR` wrote");
    else
    {
        err = assets + " holds " + std::to_string(cfgs.size()) + " configs (";
        for (size_t i = 0; i < cfgs.size(); i++)
            err += (i ? ", " : "") + cfgs[i] + ".cfg";
        err += "): pass one of them as ASSETS/NAME.cfg";
    }
    return false;
}

bool load(const std::string& assets, int threads, bool fp16, litedet_demo::ModelRunner& det, std::string& name,
          std::string& err)
{
    std::string dir, text;
    if (!resolve_assets(assets, dir, name, err))
        return false;
    if (!read_file(dir + "/" + name + ".cfg", text))
    {
        err = "cannot read " + dir + "/" + name + ".cfg";
        return false;
    }
    if (!det.set_config(text, name + ".cfg", err) || !det.set_options(false, threads, err, fp16))
        return false;
    for (int g = 0; g < det.graph_count(); g++)  // stage 1, and the head of a two-stage model
    {
        const std::string param = dir + "/" + det.graph_param(g), bin = dir + "/" + det.graph_bin(g);
        if (det.net(g).load_param(param.c_str()) != 0 || det.net(g).load_model(bin.c_str()) != 0)
        {
            err = "ncnn could not load " + param + " / " + bin + " (missing, or a layer this ncnn build lacks)";
            return false;
        }
    }
    return det.check_blobs(err);
}

struct Rgba
{
    std::vector<unsigned char> px;
    int w = 0, h = 0;
};

bool read_image(const std::string& path, Rgba& out, std::string& err)
{
    if (is_dir(path))
    {
        err = path + ": a directory, not an image";
        return false;
    }
    cv::Mat bgr = cv::imread(path, cv::IMREAD_COLOR);
    if (bgr.empty())
    {
        err = path + ": not a readable JPEG/PNG/BMP/PPM image";
        return false;
    }
    out.w = bgr.cols;
    out.h = bgr.rows;
    out.px.resize((size_t)out.w * out.h * 4);
    for (int y = 0; y < out.h; y++)
    {
        const unsigned char* s = bgr.data + (size_t)y * bgr.cols * 3;
        unsigned char* d = out.px.data() + (size_t)y * out.w * 4;
        for (int x = 0; x < out.w; x++)
        {
            d[4 * x + 0] = s[3 * x + 2];
            d[4 * x + 1] = s[3 * x + 1];
            d[4 * x + 2] = s[3 * x + 0];
            d[4 * x + 3] = 255;
        }
    }
    return true;
}

std::string json_string(const std::string& s)
{
    std::string o = "\"";
    for (char c : s)
    {
        if (c == '"' || c == '\\')
            o += '\\', o += c;
        else if ((unsigned char)c < 0x20)
        {
            char b[8];
            std::snprintf(b, sizeof b, "\\u%04x", c);
            o += b;
        }
        else
            o += c;
    }
    return o + "\"";
}

std::string json_detections(const std::vector<litedet::Detection>& dets)
{
    std::string o = "[";
    char b[160];
    for (size_t i = 0; i < dets.size(); i++)
    {
        const litedet::Detection& d = dets[i];
        std::snprintf(b, sizeof b, "%s[%.9g, %.9g, %.9g, %.9g, %.9g, %d]", i ? ", " : "", d.x1, d.y1, d.x2, d.y2,
                      d.score, d.label);
        o += b;
    }
    return o + "]";
}

// {"min", "median", "max", "runs"} of samples (ms); the median of an even count is the mean of the middle two
std::string json_stats(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    const double med = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    char b[160];
    std::snprintf(b, sizeof b, "{\"min\": %.6f, \"median\": %.6f, \"max\": %.6f, \"runs\": %zu}", v.front(), med,
                  v.back(), n);
    return b;
}

// Peak resident set of this process: VmHWM (reset by exec, unlike ru_maxrss, which a child
// inherits from the process that started it), else ru_maxrss.
long long peak_rss_bytes()
{
    std::ifstream f("/proc/self/status");
    std::string line;
    while (std::getline(f, line))
        if (line.compare(0, 6, "VmHWM:") == 0)
            return std::atoll(line.c_str() + 6) * 1024;
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return (long long)ru.ru_maxrss * 1024;
}

struct Args
{
    std::vector<std::string> pos;
    std::string masks;  // --masks DIR: each mask as DIR/STEM.pgm
    int threads = 1, runs = 20, warmup = 3;
    bool fp16 = true;
};

bool parse_int(const char* s, int lo, int& out)
{
    char* end = nullptr;
    const long v = std::strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > 1000000)
        return false;
    out = (int)v;
    return true;
}

bool parse_args(int argc, char** argv, Args& a, std::string& err)
{
    for (int i = 2; i < argc; i++)
    {
        const std::string s = argv[i];
        int* target = s == "--threads" ? &a.threads : s == "--runs" ? &a.runs : s == "--warmup" ? &a.warmup : nullptr;
        if (target)
        {
            if (i + 1 >= argc || !parse_int(argv[i + 1], target == &a.warmup ? 0 : 1, *target))
            {
                err = s + " needs a whole number" + (target == &a.warmup ? " >= 0" : " >= 1");
                return false;
            }
            i++;
        }
        else if (s == "--fp32")
            a.fp16 = false;
        else if (s == "--masks")
        {
            if (i + 1 >= argc)
            {
                err = "--masks needs a directory";
                return false;
            }
            a.masks = argv[++i];
        }
        else if (s.size() > 1 && s[0] == '-')
        {
            err = "unknown option " + s + " (known: --threads N, --fp32, --runs N, --warmup N, --masks DIR)";
            return false;
        }
        else
            a.pos.push_back(s);
    }
    return true;
}

// {"width", "height", "pixels": [per class]} of a mask
std::string json_mask(const litedet::LabelMask& m, size_t classes)
{
    std::vector<long long> n(classes, 0);
    for (std::uint8_t v : m.labels)
        if (v < classes)
            n[v]++;
    std::string o = "{\"width\": " + std::to_string(m.width) + ", \"height\": " + std::to_string(m.height) +
                    ", \"pixels\": [";
    for (size_t i = 0; i < n.size(); i++)
        o += (i ? ", " : "") + std::to_string(n[i]);
    return o + "]}";
}

// The mask as a binary 8-bit PGM (P5), written whole or not at all (temp file + rename).
bool write_pgm(const std::string& path, const litedet::LabelMask& m, std::string& err)
{
    const std::string tmp = path + ".tmp";
    {
        std::ofstream f(tmp, std::ios::binary);
        f << "P5\n" << m.width << " " << m.height << "\n255\n";
        f.write((const char*)m.labels.data(), (std::streamsize)m.labels.size());
        if (!f)
        {
            err = "could not write " + tmp;
            return false;
        }
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
    {
        err = "could not rename " + tmp + " to " + path;
        return false;
    }
    return true;
}

std::string stem_of(const std::string& path)
{
    const size_t slash = path.find_last_of('/');
    std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
    const size_t dot = base.find_last_of('.');
    return dot == std::string::npos || dot == 0 ? base : base.substr(0, dot);
}

int cmd_detect(const Args& a)
{
    litedet_demo::ModelRunner det;
    std::string err, name;
    if (!load(a.pos[0], a.threads, a.fp16, det, name, err))
    {
        std::fprintf(stderr, "litedet_cpp: %s\n", err.c_str());
        return 1;
    }
    for (size_t i = 1; i < a.pos.size(); i++)
    {
        Rgba img;
        litedet_demo::Results res;
        if (!read_image(a.pos[i], img, err) || !det.run(img.px.data(), img.w, img.h, img.w * 4, res, err)
            || (!a.masks.empty() && !res.mask.empty()
                && !write_pgm(a.masks + "/" + stem_of(a.pos[i]) + ".pgm", res.mask, err)))
        {
            std::fprintf(stderr, "litedet_cpp: %s\n", err.c_str());
            return 1;
        }
        const litedet_demo::StageTimes& t = det.last_times();
        const std::string mask = res.mask.empty() ? "" : ", \"mask\": " + json_mask(res.mask, det.class_names().size());
        std::printf("{\"image\": %s, \"width\": %d, \"height\": %d, \"input\": [%d, %d], \"detections\": %s%s}\n",
                    json_string(a.pos[i]).c_str(), img.w, img.h, t.in_w, t.in_h, json_detections(res.detections).c_str(),
                    mask.c_str());
    }
    return 0;
}

int cmd_bench(const Args& a)
{
    litedet_demo::ModelRunner det;
    std::string err, name;
    Rgba img;
    if (!load(a.pos[0], a.threads, a.fp16, det, name, err) || !read_image(a.pos[1], img, err))
    {
        std::fprintf(stderr, "litedet_cpp: %s\n", err.c_str());
        return 1;
    }
    std::vector<double> total, pre, inf, glue, post;
    std::vector<litedet::Detection> dets;
    for (int r = 0; r < a.warmup + a.runs; r++)
    {
        const double t0 = std::chrono::duration<double, std::milli>(
                              std::chrono::steady_clock::now().time_since_epoch()).count();
        if (!det.detect(img.px.data(), img.w, img.h, img.w * 4, dets, err))
        {
            std::fprintf(stderr, "litedet_cpp: %s: %s\n", a.pos[1].c_str(), err.c_str());
            return 1;
        }
        const double t1 = std::chrono::duration<double, std::milli>(
                              std::chrono::steady_clock::now().time_since_epoch()).count();
        if (r < a.warmup)
            continue;
        const litedet_demo::StageTimes& t = det.last_times();
        total.push_back(t1 - t0);
        pre.push_back(t.pre_ms);
        inf.push_back(t.inference_ms);
        glue.push_back(t.glue_ms);
        post.push_back(t.post_ms);
    }
    const litedet_demo::StageTimes& t = det.last_times();
    utsname un{};
    uname(&un);
    std::printf("{\"schema\": \"litedet-bench/1\", \"runtime\": \"litedet_cpp\", \"model\": %s, \"asset\": %s, "
                "\"precision\": \"%s\", \"threads\": %d, \"image\": %s, \"image_size\": [%d, %d], "
                "\"input\": [3, %d, %d], \"warmup\": %d, \"latency_ms\": %s, \"stages_ms\": {\"pre\": %s, "
                "\"inference\": %s, \"glue\": %s, \"post\": %s}, \"detections\": %zu, \"peak_rss_bytes\": %lld, "
                "\"arch\": %s}\n",
                json_string(det.architecture()).c_str(), json_string(name).c_str(),
                !a.fp16 ? "fp32" : det.precision() == "int8" ? "int8" : "fp16",
                a.threads, json_string(a.pos[1]).c_str(), img.w, img.h, t.in_h, t.in_w, a.warmup,
                json_stats(total).c_str(), json_stats(pre).c_str(), json_stats(inf).c_str(),
                det.has_glue() ? json_stats(glue).c_str() : "null", json_stats(post).c_str(), dets.size(),
                peak_rss_bytes(), json_string(un.machine).c_str());
    return 0;
}

int cmd_serve(const Args& a)
{
    litedet_demo::ModelRunner det;
    std::string err, name, line;
    Rgba img;
    if (!load(a.pos[0], a.threads, a.fp16, det, name, err) || !read_image(a.pos[1], img, err))
    {
        std::fprintf(stderr, "litedet_cpp: %s\n", err.c_str());
        return 1;
    }
    std::printf("{\"ready\": %s}\n", json_string(det.architecture()).c_str());
    std::fflush(stdout);
    std::vector<litedet::Detection> dets;
    while (std::getline(std::cin, line))
    {
        if (line != "run")
        {
            std::fprintf(stderr, "litedet_cpp serve: unknown command '%s' (expected run)\n", line.c_str());
            return 2;
        }
        const auto t0 = std::chrono::steady_clock::now();
        if (!det.detect(img.px.data(), img.w, img.h, img.w * 4, dets, err))
        {
            std::fprintf(stderr, "litedet_cpp: %s: %s\n", a.pos[1].c_str(), err.c_str());
            return 1;
        }
        const double total = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        const litedet_demo::StageTimes& t = det.last_times();
        std::printf("{\"total\": %.6f, \"pre\": %.6f, \"inference\": %.6f, \"glue\": %s, \"post\": %.6f, "
                    "\"input\": [3, %d, %d], \"detections\": %zu}\n",
                    total, t.pre_ms, t.inference_ms, det.has_glue() ? std::to_string(t.glue_ms).c_str() : "null",
                    t.post_ms, t.in_h, t.in_w, dets.size());
        std::fflush(stdout);
    }
    std::printf("{\"peak_rss_bytes\": %lld}\n", peak_rss_bytes());
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    const bool known = argc >= 2 && (std::strcmp(argv[1], "detect") == 0 || std::strcmp(argv[1], "bench") == 0
                                     || std::strcmp(argv[1], "serve") == 0);
    if (!known)
    {
        std::fprintf(stderr, "%s", USAGE);
        return 2;
    }
    Args a;
    std::string err;
    if (!parse_args(argc, argv, a, err))
    {
        std::fprintf(stderr, "litedet_cpp: %s\n", err.c_str());
        return 2;
    }
    const bool one_image = std::strcmp(argv[1], "detect") != 0;
    if (a.pos.size() < 2 || (one_image && a.pos.size() != 2))
    {
        std::fprintf(stderr, "litedet_cpp: %s needs ASSETS and %s\n%s", argv[1], one_image ? "one IMAGE" : "IMAGE...",
                     USAGE);
        return 2;
    }
    if (std::strcmp(argv[1], "serve") == 0)
        return cmd_serve(a);
    return one_image ? cmd_bench(a) : cmd_detect(a);
}
