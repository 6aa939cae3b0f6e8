// litedet Android demo: the ncnn half of the detector, without Android.
//
// NAME.cfg text in, ncnn options set, blob names checked, then for each RGBA
// frame: the preprocessing of runtime/detector.py (from_pixels_resize to the
// letterbox's resized size in cfg.pixel_format order -> copy_make_border
// centred with cfg.pad_value -> substract_mean_normalize(cfg.mean, cfg.norm)),
// extraction of every cls/dis blob per stride (shape-checked), and
// litedet::postprocess. Loading the param/bin is left to the caller
// (AAssetManager on the phone, file paths in host_tests/), through net().
//
// Plain C++17 + ncnn: litedet_jni.cpp uses it on Android, and
// host_tests/run_ncnn_check.sh builds it against a desktop ncnn to compare
// its detections with the Python runtime's.

#ifndef LITEDET_DEMO_LITEDET_NCNN_H
#define LITEDET_DEMO_LITEDET_NCNN_H

#include <string>
#include <vector>

#include "allocator.h"
#include "net.h"

#include "litedet_post.h"

namespace litedet_demo {

class NcnnDetector
{
public:
    NcnnDetector() = default;
    ~NcnnDetector();

    NcnnDetector(const NcnnDetector&) = delete;
    NcnnDetector& operator=(const NcnnDetector&) = delete;

    // Parse the text of NAME.cfg (cfg_name is used in messages). The frames
    // handed to detect() are RGBA, so mean/norm must have 3 values.
    bool set_config(const std::string& cfg_text, const std::string& cfg_name, std::string& err);
    const litedet::Config& config() const { return cfg_; }

    // ncnn options, set explicitly, before loading: fp16 storage, packed and
    // arithmetic on (how the bundles are checked), bf16 off, packing on,
    // num_threads, Vulkan on or off. Returns false (err says why) when
    // use_gpu is asked of an ncnn without Vulkan or a device without a GPU.
    bool set_options(bool use_gpu, int num_threads, std::string& err);

    // The net to load the param and bin into (after set_options).
    ncnn::Net& net() { return net_; }

    // After loading: cfg.input_blob must be an input and every cls/dis blob
    // an output of the graph; err lists what the graph has otherwise.
    bool check_blobs(const std::string& param_name, std::string& err) const;

    // One RGBA image (stride in bytes) -> detections in its pixels, best first.
    bool detect(const unsigned char* rgba, int w, int h, int stride, std::vector<litedet::Detection>& dets,
                std::string& err);

    int num_threads() const { return net_.opt.num_threads; }

private:
    std::string cfg_name_;
    litedet::Config cfg_;
    int pixel_type_ = 0;
    // declared before net_, so they outlive it
    ncnn::UnlockedPoolAllocator blob_pool_;
    ncnn::PoolAllocator workspace_pool_;
    ncnn::Net net_;
};

} // namespace litedet_demo

#endif // LITEDET_DEMO_LITEDET_NCNN_H
