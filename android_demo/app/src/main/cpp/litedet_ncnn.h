// litedet Android demo: the ncnn half of the detector, without Android.
//
// NAME.cfg text in (its kind= picks NanoDet's 'gfl' or the two-stage 'rpn_psroi'),
// ncnn options set, blob names checked, then for each RGBA frame: the
// preprocessing of runtime/runner.py (from_pixels_resize to the letterbox's
// resized size in pixel_format order -> copy_make_border centred with
// pad_value -> substract_mean_normalize(mean, norm)), then
//  - gfl: extraction of every cls/dis blob per stride (shape-checked) and litedet::postprocess;
//  - rpn_psroi: stage 1 (objectness, deltas, PS features), the C++ glue
//    (litedet_two_stage.h: proposals, PSRoIAlign), every RoI through the head graph
//    in one extract, then litedet::rcnn_detections.
// Loading the param/bin of each graph is left to the caller (AAssetManager on the
// phone, file paths in host_tests/), through graph_count(), graph_param(i),
// graph_bin(i) and net(i).
//
// Plain C++17 + ncnn: litedet_jni.cpp uses it on Android, and host_tests/litedet_cpp.cpp
// (built by benchmarks/cpp.py against the ncnn library of scripts/setup_ncnn_lib.sh, for
// x86_64 and aarch64) runs it on a desktop, a board or a phone: detections, compared with
// the Python runtime's in tests/test_litedet_cpp.py, and timings per stage (last_times()).

#ifndef LITEDET_DEMO_LITEDET_NCNN_H
#define LITEDET_DEMO_LITEDET_NCNN_H

#include <chrono>
#include <string>
#include <vector>

#include "allocator.h"
#include "net.h"

#include "litedet_post.h"
#include "litedet_two_stage.h"

namespace litedet_demo {

// Where the last detect() spent its time (ms, steady clock): preprocessing (resize, pad,
// normalise), ncnn extraction (both graphs of a two-stage model), the glue between the
// graphs (proposals, PSRoIAlign; 0 for one-graph models) and the postprocessing; and the
// network input it used (the letterbox, w x h).
struct StageTimes
{
    double pre_ms = 0, inference_ms = 0, glue_ms = 0, post_ms = 0;
    int in_w = 0, in_h = 0;
};

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
    const litedet::Config& config() const { return cfg_; }  // gfl configs
    const litedet::TwoStageConfig& two_stage_config() const { return ts_; }  // rpn_psroi configs
    bool two_stage() const { return two_stage_; }

    // The graphs to load, in order: 0 the (stage-1) graph, 1 the head of a two-stage model.
    int graph_count() const { return two_stage_ ? 2 : 1; }
    const std::string& graph_param(int i) const;
    const std::string& graph_bin(int i) const;
    const std::vector<std::string>& class_names() const { return two_stage_ ? ts_.class_names : cfg_.class_names; }
    const std::string& architecture() const { return two_stage_ ? ts_.architecture : cfg_.architecture; }

    // ncnn options, set explicitly, before loading: fp16 storage, packed and
    // arithmetic on (how the bundles are checked; fp16=false turns all three off),
    // bf16 off, packing on, num_threads, Vulkan on or off. Returns false (err says
    // why) when use_gpu is asked of an ncnn without Vulkan or a device without a GPU.
    bool set_options(bool use_gpu, int num_threads, std::string& err, bool fp16 = true);

    // The net to load graph i's param and bin into (after set_options).
    ncnn::Net& net(int i = 0) { return i == 0 ? net_ : head_net_; }

    // After loading: every blob the config names must be an input / output of
    // its graph; err lists what the graph has otherwise.
    bool check_blobs(const std::string& param_name, std::string& err) const;

    // One RGBA image (stride in bytes) -> detections in its pixels, best first.
    bool detect(const unsigned char* rgba, int w, int h, int stride, std::vector<litedet::Detection>& dets,
                std::string& err);

    int num_threads() const { return net_.opt.num_threads; }
    const StageTimes& last_times() const { return times_; }

private:
    // The preprocessing keys, the same in every kind's config.
    struct Input
    {
        std::string blob, pixel_format, pad_mode, resize_policy;
        std::vector<float> mean, norm;
        int target_size = 0, pad_multiple = 0;
        bool pad_normalized = false;
        float pad_value = 0.f;
    };
    bool preprocess(const unsigned char* rgba, int w, int h, int stride, ncnn::Mat& in_pad, litedet::Letterbox& lb,
                    std::string& err) const;
    bool detect_gfl(const ncnn::Mat& in, const litedet::Letterbox& lb, std::vector<litedet::Detection>& dets,
                    std::string& err);
    bool detect_two_stage(const ncnn::Mat& in, const litedet::Letterbox& lb, std::vector<litedet::Detection>& dets,
                          std::string& err);

    static double now_ms()
    {
        return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
    }

    StageTimes times_;
    std::string cfg_name_;
    bool two_stage_ = false;
    litedet::Config cfg_;
    litedet::TwoStageConfig ts_;
    Input input_;
    int pixel_type_ = 0;
    // declared before the nets, so they outlive them
    ncnn::UnlockedPoolAllocator blob_pool_;
    ncnn::PoolAllocator workspace_pool_;
    ncnn::Net net_;
    ncnn::Net head_net_;  // two-stage: the R-CNN head
};

} // namespace litedet_demo

#endif // LITEDET_DEMO_LITEDET_NCNN_H
