// litedet Android demo: the ncnn half of the detector (see litedet_ncnn.h).

#include "litedet_ncnn.h"

#include <exception>

#include "gpu.h"
#include "mat.h"

#include "demo_utils.h"

namespace litedet_demo {

namespace {

TensorShape shape_of(const ncnn::Mat& m)
{
    return TensorShape{m.dims, m.w, m.h, m.d, m.c, m.elemsize, m.elempack};
}

bool contains(const std::vector<std::string>& v, const std::string& s)
{
    for (const std::string& x : v)
        if (x == s)
            return true;
    return false;
}

} // namespace

NcnnDetector::~NcnnDetector()
{
    net_.clear();  // before the allocators it points to go away
}

bool NcnnDetector::set_config(const std::string& cfg_text, const std::string& cfg_name, std::string& err)
{
    cfg_name_ = cfg_name;
    std::string perr;
    if (!litedet::parse_config(cfg_text, cfg_, &perr))
    {
        err = cfg_name + ": " + perr;
        return false;
    }
    // the frames are RGBA: 3 channels reach the net
    if (cfg_.mean.size() != 3 || cfg_.norm.size() != 3)
    {
        err = cfg_name + ": mean and norm need 3 values (one per channel of '" + cfg_.pixel_format + "'), got "
              + std::to_string(cfg_.mean.size()) + " and " + std::to_string(cfg_.norm.size());
        return false;
    }
    if (cfg_.pixel_format == "rgb")
        pixel_type_ = ncnn::Mat::PIXEL_RGBA2RGB;
    else if (cfg_.pixel_format == "bgr")
        pixel_type_ = ncnn::Mat::PIXEL_RGBA2BGR;
    else
    {
        err = cfg_name + ": pixel_format is '" + cfg_.pixel_format + "'; expected 'bgr' or 'rgb'";
        return false;
    }
    if (cfg_.param.empty() || cfg_.bin.empty())
    {
        err = cfg_name + ": param= and bin= must name the model files";
        return false;
    }
    return true;
}

bool NcnnDetector::set_options(bool use_gpu, int num_threads, std::string& err)
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
    net_.clear();
    net_.opt = ncnn::Option();
    net_.opt.num_threads = num_threads > 0 ? num_threads : 1;
    net_.opt.lightmode = true;
    net_.opt.blob_allocator = &blob_pool_;
    net_.opt.workspace_allocator = &workspace_pool_;
    // fp16 on, as the bundles are converted and checked; set explicitly, since
    // ncnn's defaults differ between versions and targets
    net_.opt.use_fp16_storage = true;
    net_.opt.use_fp16_packed = true;
    net_.opt.use_fp16_arithmetic = true;
    net_.opt.use_bf16_storage = false;
    net_.opt.use_packing_layout = true;
#if NCNN_VULKAN
    net_.opt.use_vulkan_compute = use_gpu;
#endif
    return true;
}

bool NcnnDetector::check_blobs(const std::string& param_name, std::string& err) const
{
    std::vector<std::string> ins, outs;
    for (const char* n : net_.input_names())
        ins.emplace_back(n);
    for (const char* n : net_.output_names())
        outs.emplace_back(n);
    if (!contains(ins, cfg_.input_blob))
    {
        err = cfg_name_ + ": input_blob '" + cfg_.input_blob + "' is not an input of " + param_name + "; it has ["
              + join(ins, ", ") + "]";
        return false;
    }
    for (size_t i = 0; i < cfg_.strides.size(); i++)
    {
        const std::string* blobs[2] = {&cfg_.cls_blobs[i], &cfg_.dis_blobs[i]};
        const char* keys[2] = {"cls_blobs", "dis_blobs"};
        for (int k = 0; k < 2; k++)
        {
            if (!contains(outs, *blobs[k]))
            {
                err = cfg_name_ + ": " + keys[k] + " names '" + *blobs[k] + "' (stride " + std::to_string(cfg_.strides[i])
                      + "), which is not an output of " + param_name + "; it has [" + join(outs, ", ") + "]";
                return false;
            }
        }
    }
    return true;
}

bool NcnnDetector::detect(const unsigned char* rgba, int w, int h, int stride, std::vector<litedet::Detection>& dets,
                          std::string& err)
{
    dets.clear();
    if (!rgba || w <= 0 || h <= 0 || stride < w * 4)
    {
        err = "empty frame";
        return false;
    }

    litedet::Letterbox lb{};
    try
    {
        lb = litedet::letterbox_geometry(w, h, cfg_.target_size, cfg_.pad_multiple, cfg_.pad_mode == "fixed",
                                         litedet::resize_policy_code(cfg_.resize_policy));
    }
    catch (const std::exception& e)
    {
        err = std::string("letterbox: ") + e.what();
        return false;
    }

    // preprocessing, call for call as runtime/detector.py
    ncnn::Mat in = ncnn::Mat::from_pixels_resize(rgba, pixel_type_, w, h, stride, lb.resized_w, lb.resized_h);
    const int pad_bottom = lb.in_h - lb.resized_h - lb.pad_top;
    const int pad_right = lb.in_w - lb.resized_w - lb.pad_left;
    ncnn::Option border_opt;  // like the Python runtime: a default Option with the net's thread count
    border_opt.num_threads = net_.opt.num_threads;
    ncnn::Mat in_pad;
    // pad_normalized: pad_value is in normalised units, so normalise first (upstream NanoDet's order)
    if (cfg_.pad_normalized) in.substract_mean_normalize(cfg_.mean.data(), cfg_.norm.data());
    ncnn::copy_make_border(in, in_pad, lb.pad_top, pad_bottom, lb.pad_left, pad_right, ncnn::BORDER_CONSTANT,
                           cfg_.pad_value, border_opt);
    if (!cfg_.pad_normalized) in_pad.substract_mean_normalize(cfg_.mean.data(), cfg_.norm.data());

    // inference; every output Mat stays alive until postprocess is done
    const size_t n = cfg_.strides.size();
    std::vector<ncnn::Mat> cls(n), dis(n);
    std::vector<litedet::LevelOutput> levels(n);
    {
        ncnn::Extractor ex = net_.create_extractor();
        if (ex.input(cfg_.input_blob.c_str(), in_pad) != 0)
        {
            err = "ncnn rejected the input blob '" + cfg_.input_blob + "'";
            return false;
        }
        const int dist_cols = 4 * (cfg_.reg_max + 1);
        for (size_t i = 0; i < n; i++)
        {
            const int s = cfg_.strides[i];
            const int rows_expected = grid_rows(lb.in_w, lb.in_h, s);
            if (ex.extract(cfg_.cls_blobs[i].c_str(), cls[i]) != 0)
            {
                err = "ncnn failed to compute output '" + cfg_.cls_blobs[i] + "'";
                return false;
            }
            if (ex.extract(cfg_.dis_blobs[i].c_str(), dis[i]) != 0)
            {
                err = "ncnn failed to compute output '" + cfg_.dis_blobs[i] + "'";
                return false;
            }
            int cls_rows = 0, dis_rows = 0;
            if (!check_level_output(shape_of(cls[i]), cfg_.cls_blobs[i], "cls_blobs", s, cfg_.num_classes, "num_classes",
                                    rows_expected, cls_rows, err))
                return false;
            if (!check_level_output(shape_of(dis[i]), cfg_.dis_blobs[i], "dis_blobs", s, dist_cols, "4*(reg_max+1)",
                                    rows_expected, dis_rows, err))
                return false;
            levels[i].cls = (const float*)cls[i].data;
            levels[i].dis = (const float*)dis[i].data;
            levels[i].rows = cls_rows;
            levels[i].stride = s;
        }
    }

    try
    {
        dets = litedet::postprocess(cfg_, levels, lb);
    }
    catch (const std::exception& e)
    {
        err = std::string("postprocess: ") + e.what();
        return false;
    }
    return true;
}

} // namespace litedet_demo
