// litedet Android demo: the model runner and the kind registry (see litedet_ncnn.h).

#include "litedet_ncnn.h"

#include <exception>
#include <map>

#include "gpu.h"
#include "mat.h"

#include "demo_utils.h"

namespace litedet_demo {

namespace {

std::map<std::string, NcnnKindFactory>& registry()
{
    static std::map<std::string, NcnnKindFactory> kinds;  // built on first use: safe from static init order
    return kinds;
}

bool contains(const std::vector<std::string>& v, const std::string& s)
{
    for (const std::string& x : v)
        if (x == s)
            return true;
    return false;
}

std::vector<std::string> names_of(const std::vector<const char*>& v)
{
    return std::vector<std::string>(v.begin(), v.end());
}

const std::vector<std::string> kNoNames;
const std::string kNoName;

} // namespace

bool register_ncnn_kind(const std::string& name, NcnnKindFactory make)
{
    return registry().emplace(name, make).second;
}

std::unique_ptr<NcnnKind> make_ncnn_kind(const std::string& name)
{
    auto it = registry().find(name);
    return it == registry().end() ? nullptr : it->second();
}

std::vector<std::string> ncnn_kind_names()
{
    std::vector<std::string> out;
    for (const auto& kv : registry())
        out.push_back(kv.first);
    return out;
}

ModelRunner::~ModelRunner()
{
    for (auto& n : nets_)
        n->clear();  // before the allocators they point to go away
}

const std::vector<std::string>& ModelRunner::class_names() const
{
    return kind_ ? kind_->class_names() : kNoNames;
}

const std::string& ModelRunner::architecture() const
{
    return kind_ ? kind_->architecture() : kNoName;
}

bool ModelRunner::set_config(const std::string& cfg_text, const std::string& cfg_name, std::string& err)
{
    cfg_name_ = cfg_name;
    kind_name_ = litedet::config_kind(cfg_text);
    kind_ = make_ncnn_kind(kind_name_);
    if (!kind_)
    {
        err = cfg_name + ": kind='" + kind_name_ + "' is not a postprocess kind this app runs; it runs "
              + join(ncnn_kind_names(), ", ");
        return false;
    }
    std::string perr;
    if (!kind_->parse(cfg_text, perr))
    {
        err = cfg_name + ": " + perr;
        kind_.reset();
        return false;
    }
    input_ = kind_->input();
    graphs_ = kind_->graphs();
    nets_.clear();
    for (size_t i = 0; i < graphs_.size(); i++)
        nets_.emplace_back(new ncnn::Net());
    return check_input(err);
}

bool ModelRunner::check_input(std::string& err)
{
    // the frames are RGBA: 3 channels reach the net
    if (input_.mean.size() != 3 || input_.norm.size() != 3)
    {
        err = cfg_name_ + ": mean and norm need 3 values (one per channel of '" + input_.pixel_format + "'), got "
              + std::to_string(input_.mean.size()) + " and " + std::to_string(input_.norm.size());
        return false;
    }
    if (input_.pixel_format == "rgb")
        pixel_type_ = ncnn::Mat::PIXEL_RGBA2RGB;
    else if (input_.pixel_format == "bgr")
        pixel_type_ = ncnn::Mat::PIXEL_RGBA2BGR;
    else
    {
        err = cfg_name_ + ": pixel_format is '" + input_.pixel_format + "'; expected 'bgr' or 'rgb'";
        return false;
    }
    for (const GraphFiles& g : graphs_)
        if (g.param.empty() || g.bin.empty())
        {
            err = cfg_name_ + ": every graph's param and bin must be named";
            return false;
        }
    return true;
}

bool ModelRunner::set_options(bool use_gpu, int num_threads, std::string& err, bool fp16)
{
#if NCNN_VULKAN
    if (use_gpu && ncnn::get_gpu_count() == 0)
    {
        err = "GPU requested, but ncnn found no Vulkan GPU on this device: choose CPU";
        return false;
    }
#else
    if (use_gpu)
    {
        err = "GPU requested, but this ncnn was built without Vulkan (use an ncnn-*-android-vulkan package)";
        return false;
    }
#endif
    for (auto& net : nets_)
    {
        net->clear();
        net->opt = ncnn::Option();
        net->opt.num_threads = num_threads > 0 ? num_threads : 1;
        net->opt.lightmode = true;
        net->opt.blob_allocator = &blob_pool_;
        net->opt.workspace_allocator = &workspace_pool_;
        // fp16 on, as the bundles are converted and checked; set explicitly, since
        // ncnn's defaults differ between versions and targets
        net->opt.use_fp16_storage = fp16;
        net->opt.use_fp16_packed = fp16;
        net->opt.use_fp16_arithmetic = fp16;
        net->opt.use_bf16_storage = false;
        // int8 layers (8=1) run in int8 when the config says the graph is int8 (litedet quantize)
        net->opt.use_int8_inference = input_.precision == "int8";
        net->opt.use_packing_layout = true;
#if NCNN_VULKAN
        net->opt.use_vulkan_compute = use_gpu;
#endif
    }
    return true;
}

bool ModelRunner::check_blobs(std::string& err) const
{
    if (!kind_)
    {
        err = "no config: call set_config first";
        return false;
    }
    for (const BlobRef& b : kind_->blobs())
    {
        const ncnn::Net& net = *nets_[b.graph];
        const std::vector<std::string> have = names_of(b.input ? net.input_names() : net.output_names());
        if (!contains(have, b.blob))
        {
            err = cfg_name_ + ": " + b.key + " '" + b.blob + "' is not an " + (b.input ? "input" : "output") + " of "
                  + graphs_[b.graph].param + "; it has [" + join(have, ", ") + "]";
            return false;
        }
    }
    return true;
}

bool ModelRunner::preprocess(const unsigned char* rgba, int w, int h, int stride, ncnn::Mat& in_pad,
                             litedet::Letterbox& lb, std::string& err) const
{
    if (!rgba || w <= 0 || h <= 0 || stride < w * 4)
    {
        err = "empty frame";
        return false;
    }
    try
    {
        lb = litedet::letterbox_geometry(w, h, input_.target_size, input_.pad_multiple, input_.pad_mode == "fixed",
                                         litedet::resize_policy_code(input_.resize_policy));
    }
    catch (const std::exception& e)
    {
        err = std::string("letterbox: ") + e.what();
        return false;
    }
    // preprocessing, call for call as runtime/runner.py
    ncnn::Mat in = ncnn::Mat::from_pixels_resize(rgba, pixel_type_, w, h, stride, lb.resized_w, lb.resized_h);
    const int pad_bottom = lb.in_h - lb.resized_h - lb.pad_top;
    const int pad_right = lb.in_w - lb.resized_w - lb.pad_left;
    ncnn::Option border_opt;  // like the Python runtime: a default Option with the net's thread count
    border_opt.num_threads = num_threads();
    // pad_normalized: pad_value is in normalised units, so normalise first (upstream NanoDet's order)
    if (input_.pad_normalized) in.substract_mean_normalize(input_.mean.data(), input_.norm.data());
    ncnn::copy_make_border(in, in_pad, lb.pad_top, pad_bottom, lb.pad_left, pad_right, ncnn::BORDER_CONSTANT,
                           input_.pad_value, border_opt);
    if (!input_.pad_normalized) in_pad.substract_mean_normalize(input_.mean.data(), input_.norm.data());
    return true;
}

bool ModelRunner::detect(const unsigned char* rgba, int w, int h, int stride, std::vector<litedet::Detection>& dets,
                         std::string& err)
{
    Results results;
    const bool ok = run(rgba, w, h, stride, results, err);
    dets = std::move(results.detections);
    return ok;
}

bool ModelRunner::run(const unsigned char* rgba, int w, int h, int stride, Results& results, std::string& err)
{
    results = Results{};
    times_ = StageTimes{};
    if (!kind_)
    {
        err = "no config: call set_config first";
        return false;
    }
    ncnn::Mat in_pad;
    litedet::Letterbox lb{};
    const double t0 = now_ms();
    if (!preprocess(rgba, w, h, stride, in_pad, lb, err))
        return false;
    times_.pre_ms = now_ms() - t0;
    times_.in_w = lb.in_w;
    times_.in_h = lb.in_h;
    std::vector<ncnn::Net*> nets;
    for (auto& n : nets_)
        nets.push_back(n.get());
    return kind_->run(nets, in_pad, lb, results, times_, err);
}

} // namespace litedet_demo
