// litedet Android demo: the one model runner, without Android.
//
// ModelRunner reads NAME.cfg, whose kind= names the postprocess kind, and asks the kind registry
// for it: the kind owns its config keys (its table in litedet_config_keys.h), their parsing, the
// graphs it needs and its steps. The runner sets ncnn options, hands out one ncnn::Net per graph
// the kind lists (loading each param/bin is left to the caller: AAssetManager on the phone, file
// paths in host_tests/), checks every blob the kind names, and for each RGBA frame runs the
// preprocessing of runtime/runner.py (from_pixels_resize to the letterbox's resized size in
// pixel_format order -> copy_make_border with pad_value -> substract_mean_normalize(mean, norm))
// and then the kind. It never asks which kind it runs: litedet_jni.cpp and
// host_tests/litedet_cpp.cpp call the runner only.
//
// A kind is one NcnnKind subclass in its own file, registered at start-up with
// LITEDET_REGISTER_NCNN_KIND (litedet_gfl_ncnn.cpp: 'gfl', NanoDet; litedet_rpn_psroi_ncnn.cpp:
// 'rpn_psroi', ThunderNet and Light-Head R-CNN); adding a kind adds files and edits none of these.
//
// Plain C++17 + ncnn: litedet_jni.cpp uses it on Android, and host_tests/litedet_cpp.cpp
// (built by benchmarks/cpp.py against the ncnn library of scripts/setup_ncnn_lib.sh, for
// x86_64 and aarch64) runs it on a desktop, a board or a phone: detections, compared with
// the Python runtime's in tests/test_litedet_cpp.py, and timings per stage (last_times()).

#ifndef LITEDET_DEMO_LITEDET_NCNN_H
#define LITEDET_DEMO_LITEDET_NCNN_H

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "allocator.h"
#include "net.h"

#include "litedet_kind.h"
#include "litedet_letterbox.h"

namespace litedet_demo {

// Where the last detect() spent its time (ms, steady clock): preprocessing (resize, pad,
// normalise), ncnn extraction (every graph), the glue between graphs (0 for one-graph kinds)
// and the postprocessing; and the network input it used (the letterbox, w x h).
struct StageTimes
{
    double pre_ms = 0, inference_ms = 0, glue_ms = 0, post_ms = 0;
    int in_w = 0, in_h = 0;
};

inline double now_ms()
{
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The preprocessing keys, the same in every kind's config (LITEDET_COMMON_KEYS).
struct InputConfig
{
    std::string blob, pixel_format, pad_mode, resize_policy, precision;
    std::vector<float> mean, norm;
    int target_size = 0, pad_multiple = 0;
    bool pad_normalized = false;
    float pad_value = 0.f;
};

// The common keys of any kind's parsed config, as the runner reads them.
template <class Cfg>
InputConfig input_of(const Cfg& c)
{
    return InputConfig{c.input_blob, c.pixel_format, c.pad_mode, c.resize_policy, c.precision, c.mean, c.norm,
                       c.target_size, c.pad_multiple, c.pad_normalized, c.pad_value};
}

// A graph the kind needs: its files, as NAME.cfg names them, in load order (0 is the graph the
// preprocessed frame goes into).
struct GraphFiles
{
    std::string param, bin;
};

// A blob the config names: which graph, which config key, whether it is an input of that graph.
struct BlobRef
{
    int graph;
    std::string key, blob;
    bool input;
};

// What a kind returns for one frame: detections (detectors) or a mask (segmentation), in the
// original image's pixels; the other member stays empty.
struct Results
{
    std::vector<litedet::Detection> detections;
    litedet::LabelMask mask;
};

// One postprocess kind on the device.
class NcnnKind
{
public:
    virtual ~NcnnKind() = default;
    // Parse NAME.cfg (its own key table); false and err naming the key on a bad config.
    virtual bool parse(const std::string& cfg_text, std::string& err) = 0;
    virtual InputConfig input() const = 0;
    virtual std::vector<GraphFiles> graphs() const = 0;
    virtual std::vector<BlobRef> blobs() const = 0;
    virtual const std::vector<std::string>& class_names() const = 0;
    virtual const std::string& architecture() const = 0;
    // Whether the kind has glue between graphs (timed as StageTimes::glue_ms).
    virtual bool has_glue() const { return false; }
    // The preprocessed frame `in` (letterbox lb) through every graph and the kind's steps ->
    // results in original-image pixels (detections best first, or a mask); times filled per stage.
    virtual bool run(std::vector<ncnn::Net*>& nets, const ncnn::Mat& in, const litedet::Letterbox& lb,
                     Results& results, StageTimes& times, std::string& err) = 0;
};

// A kind whose NAME.cfg Parse reads into cfg_ (a config with the common keys, class_names and
// architecture): what the runner asks of every kind's config, written once.
template <class Cfg, bool (*Parse)(const std::string&, Cfg&, std::string*)>
class ConfiguredKind : public NcnnKind
{
public:
    bool parse(const std::string& cfg_text, std::string& err) override { return Parse(cfg_text, cfg_, &err); }
    InputConfig input() const override { return input_of(cfg_); }
    const std::vector<std::string>& class_names() const override { return cfg_.class_names; }
    const std::string& architecture() const override { return cfg_.architecture; }

protected:
    Cfg cfg_;
};

using NcnnKindFactory = std::unique_ptr<NcnnKind> (*)();
// Register a kind under its name (the value of kind= in NAME.cfg); false when the name is taken.
bool register_ncnn_kind(const std::string& name, NcnnKindFactory make);
// A new instance of a registered kind, or nullptr.
std::unique_ptr<NcnnKind> make_ncnn_kind(const std::string& name);
std::vector<std::string> ncnn_kind_names();

#define LITEDET_REGISTER_NCNN_KIND(NAME, TYPE)                                                                \
    static const bool litedet_registered_##TYPE = ::litedet_demo::register_ncnn_kind(                        \
        NAME, []() -> std::unique_ptr<::litedet_demo::NcnnKind> { return std::unique_ptr<TYPE>(new TYPE()); })

class ModelRunner
{
public:
    ModelRunner() = default;
    ~ModelRunner();

    ModelRunner(const ModelRunner&) = delete;
    ModelRunner& operator=(const ModelRunner&) = delete;

    // Parse the text of NAME.cfg (cfg_name is used in messages) with the kind its kind= names.
    // The frames handed to detect() are RGBA, so mean/norm must have 3 values.
    bool set_config(const std::string& cfg_text, const std::string& cfg_name, std::string& err);

    // The graphs to load, in order (the kind's list).
    int graph_count() const { return (int)graphs_.size(); }
    const std::string& graph_param(int i) const { return graphs_[i].param; }
    const std::string& graph_bin(int i) const { return graphs_[i].bin; }
    const std::vector<std::string>& class_names() const;
    const std::string& architecture() const;
    const std::string& kind_name() const { return kind_name_; }
    // the config's precision key: fp16 | fp32 | int8 (how the graph stores its weights)
    const std::string& precision() const { return input_.precision; }
    bool has_glue() const { return kind_ && kind_->has_glue(); }

    // ncnn options, set explicitly, after set_config and before loading: fp16 storage, packed and
    // arithmetic on (how the bundles are checked; fp16=false turns all three off),
    // int8 inference on when the config's precision is int8, bf16 off, packing on, num_threads,
    // Vulkan on or off. Returns false (err says
    // why) when use_gpu is asked of an ncnn without Vulkan or a device without a GPU.
    bool set_options(bool use_gpu, int num_threads, std::string& err, bool fp16 = true);

    // The net to load graph i's param and bin into (after set_config and set_options).
    ncnn::Net& net(int i = 0) { return *nets_[i]; }

    // After loading: every blob the config names must be an input / output of its graph;
    // err lists what the graph has otherwise.
    bool check_blobs(std::string& err) const;

    // One RGBA image (stride in bytes) -> the kind's results in its pixels (detections best
    // first, or a mask); detect() keeps the detections only.
    bool run(const unsigned char* rgba, int w, int h, int stride, Results& results, std::string& err);
    bool detect(const unsigned char* rgba, int w, int h, int stride, std::vector<litedet::Detection>& dets,
                std::string& err);

    int num_threads() const { return nets_.empty() ? 0 : nets_[0]->opt.num_threads; }
    const StageTimes& last_times() const { return times_; }

private:
    bool preprocess(const unsigned char* rgba, int w, int h, int stride, ncnn::Mat& in_pad, litedet::Letterbox& lb,
                    std::string& err) const;
    bool check_input(std::string& err);

    StageTimes times_;
    std::string cfg_name_, kind_name_;
    std::unique_ptr<NcnnKind> kind_;
    InputConfig input_;
    std::vector<GraphFiles> graphs_;
    int pixel_type_ = 0;
    // declared before the nets, so they outlive them
    ncnn::UnlockedPoolAllocator blob_pool_;
    ncnn::PoolAllocator workspace_pool_;
    std::vector<std::unique_ptr<ncnn::Net>> nets_;
};

} // namespace litedet_demo

#endif // LITEDET_DEMO_LITEDET_NCNN_H
