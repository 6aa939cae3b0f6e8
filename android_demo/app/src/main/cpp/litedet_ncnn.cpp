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
    net_.clear();  // before the allocators they point to go away
    head_net_.clear();
}

const std::string& NcnnDetector::graph_param(int i) const
{
    return two_stage_ ? (i == 0 ? ts_.param : ts_.head_param) : cfg_.param;
}

const std::string& NcnnDetector::graph_bin(int i) const
{
    return two_stage_ ? (i == 0 ? ts_.bin : ts_.head_bin) : cfg_.bin;
}

bool NcnnDetector::set_config(const std::string& cfg_text, const std::string& cfg_name, std::string& err)
{
    cfg_name_ = cfg_name;
    std::string perr;
    two_stage_ = litedet::config_kind(cfg_text) == "rpn_psroi";
    if (two_stage_ ? !litedet::parse_two_stage_config(cfg_text, ts_, &perr) : !litedet::parse_config(cfg_text, cfg_, &perr))
    {
        err = cfg_name + ": " + perr;
        return false;
    }
    if (two_stage_)
        input_ = Input{ts_.input_blob, ts_.pixel_format, ts_.pad_mode, ts_.resize_policy, ts_.mean, ts_.norm,
                       ts_.target_size, ts_.pad_multiple, ts_.pad_normalized, ts_.pad_value};
    else
        input_ = Input{cfg_.input_blob, cfg_.pixel_format, cfg_.pad_mode, cfg_.resize_policy, cfg_.mean, cfg_.norm,
                       cfg_.target_size, cfg_.pad_multiple, cfg_.pad_normalized, cfg_.pad_value};
    // the frames are RGBA: 3 channels reach the net
    if (input_.mean.size() != 3 || input_.norm.size() != 3)
    {
        err = cfg_name + ": mean and norm need 3 values (one per channel of '" + input_.pixel_format + "'), got "
              + std::to_string(input_.mean.size()) + " and " + std::to_string(input_.norm.size());
        return false;
    }
    if (input_.pixel_format == "rgb")
        pixel_type_ = ncnn::Mat::PIXEL_RGBA2RGB;
    else if (input_.pixel_format == "bgr")
        pixel_type_ = ncnn::Mat::PIXEL_RGBA2BGR;
    else
    {
        err = cfg_name + ": pixel_format is '" + input_.pixel_format + "'; expected 'bgr' or 'rgb'";
        return false;
    }
    for (int i = 0; i < graph_count(); i++)
        if (graph_param(i).empty() || graph_bin(i).empty())
        {
            err = cfg_name + ": every graph's param and bin must be named";
            return false;
        }
    return true;
}

bool NcnnDetector::set_options(bool use_gpu, int num_threads, std::string& err, bool fp16)
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
    for (ncnn::Net* net : {&net_, &head_net_})
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
        net->opt.use_packing_layout = true;
#if NCNN_VULKAN
        net->opt.use_vulkan_compute = use_gpu;
#endif
    }
    return true;
}

namespace {

std::vector<std::string> names_of(const std::vector<const char*>& v)
{
    return std::vector<std::string>(v.begin(), v.end());
}

// err names the first of `blobs` (config key -> blob) missing from `have`.
bool have_all(const std::vector<std::pair<std::string, std::string>>& blobs, const std::vector<std::string>& have,
              const std::string& what, const std::string& cfg_name, const std::string& param_name, std::string& err)
{
    for (const auto& kb : blobs)
        if (!contains(have, kb.second))
        {
            err = cfg_name + ": " + kb.first + " '" + kb.second + "' is not an " + what + " of " + param_name
                  + "; it has [" + join(have, ", ") + "]";
            return false;
        }
    return true;
}

} // namespace

bool NcnnDetector::check_blobs(const std::string& param_name, std::string& err) const
{
    const std::vector<std::string> ins = names_of(net_.input_names()), outs = names_of(net_.output_names());
    if (!have_all({{"input_blob", input_.blob}}, ins, "input", cfg_name_, param_name, err))
        return false;
    if (two_stage_)
    {
        const std::vector<std::string> hins = names_of(head_net_.input_names());
        const std::vector<std::string> houts = names_of(head_net_.output_names());
        return have_all({{"obj_blob", ts_.obj_blob}, {"deltas_blob", ts_.deltas_blob}, {"feat_blob", ts_.feat_blob}},
                        outs, "output", cfg_name_, param_name, err)
               && have_all({{"head_input_blob", ts_.head_input_blob}}, hins, "input", cfg_name_, ts_.head_param, err)
               && have_all({{"head_scores_blob", ts_.head_scores_blob}, {"head_deltas_blob", ts_.head_deltas_blob}},
                           houts, "output", cfg_name_, ts_.head_param, err);
    }
    for (size_t i = 0; i < cfg_.strides.size(); i++)
    {
        const std::string s = " (stride " + std::to_string(cfg_.strides[i]) + ")";
        if (!have_all({{"cls_blobs" + s, cfg_.cls_blobs[i]}, {"dis_blobs" + s, cfg_.dis_blobs[i]}}, outs, "output",
                      cfg_name_, param_name, err))
            return false;
    }
    return true;
}

bool NcnnDetector::preprocess(const unsigned char* rgba, int w, int h, int stride, ncnn::Mat& in_pad,
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
    border_opt.num_threads = net_.opt.num_threads;
    // pad_normalized: pad_value is in normalised units, so normalise first (upstream NanoDet's order)
    if (input_.pad_normalized) in.substract_mean_normalize(input_.mean.data(), input_.norm.data());
    ncnn::copy_make_border(in, in_pad, lb.pad_top, pad_bottom, lb.pad_left, pad_right, ncnn::BORDER_CONSTANT,
                           input_.pad_value, border_opt);
    if (!input_.pad_normalized) in_pad.substract_mean_normalize(input_.mean.data(), input_.norm.data());
    return true;
}

bool NcnnDetector::detect(const unsigned char* rgba, int w, int h, int stride, std::vector<litedet::Detection>& dets,
                          std::string& err)
{
    dets.clear();
    times_ = StageTimes{};
    ncnn::Mat in_pad;
    litedet::Letterbox lb{};
    const double t0 = now_ms();
    if (!preprocess(rgba, w, h, stride, in_pad, lb, err))
        return false;
    times_.pre_ms = now_ms() - t0;
    times_.in_w = lb.in_w;
    times_.in_h = lb.in_h;
    return two_stage_ ? detect_two_stage(in_pad, lb, dets, err) : detect_gfl(in_pad, lb, dets, err);
}

bool NcnnDetector::detect_gfl(const ncnn::Mat& in_pad, const litedet::Letterbox& lb,
                              std::vector<litedet::Detection>& dets, std::string& err)
{
    // inference; every output Mat stays alive until postprocess is done
    const size_t n = cfg_.strides.size();
    std::vector<ncnn::Mat> cls(n), dis(n);
    std::vector<litedet::LevelOutput> levels(n);
    const double t0 = now_ms();
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

    const double t1 = now_ms();
    times_.inference_ms = t1 - t0;
    try
    {
        dets = litedet::postprocess(cfg_, levels, lb);
        times_.post_ms = now_ms() - t1;
    }
    catch (const std::exception& e)
    {
        err = std::string("postprocess: ") + e.what();
        return false;
    }
    return true;
}

namespace {

// A CHW (or HW) output as one contiguous fp32 block: ncnn pads each channel to cstep.
ncnn::Mat flat(const ncnn::Mat& m)
{
    return m.reshape(m.w * m.h * m.d * m.c);
}

} // namespace

bool NcnnDetector::detect_two_stage(const ncnn::Mat& in_pad, const litedet::Letterbox& lb,
                                    std::vector<litedet::Detection>& dets, std::string& err)
{
    const litedet::TwoStageConfig& c = ts_;
    const int a = (int)(c.anchor_sizes.size() * c.anchor_ratios.size());
    const int fw = (lb.in_w + c.stride - 1) / c.stride, fh = (lb.in_h + c.stride - 1) / c.stride;
    const int feat_c = c.psroi_groups * c.pooled_size * c.pooled_size;
    ncnn::Mat obj, deltas, feat;
    double t = now_ms();
    {
        ncnn::Extractor ex = net_.create_extractor();
        if (ex.input(c.input_blob.c_str(), in_pad) != 0)
        {
            err = "ncnn rejected the input blob '" + c.input_blob + "'";
            return false;
        }
        const std::pair<const std::string*, ncnn::Mat*> outs[3] = {{&c.obj_blob, &obj}, {&c.deltas_blob, &deltas},
                                                                   {&c.feat_blob, &feat}};
        for (const auto& o : outs)
            if (ex.extract(o.first->c_str(), *o.second) != 0)
            {
                err = "ncnn failed to compute output '" + *o.first + "'";
                return false;
            }
    }
    const int want_c[3] = {a, 4 * a, feat_c};
    const ncnn::Mat* got[3] = {&obj, &deltas, &feat};
    const char* keys[3] = {"obj_blob", "deltas_blob", "feat_blob"};
    for (int i = 0; i < 3; i++)
        if (got[i]->dims != 3 || got[i]->c != want_c[i] || got[i]->w != fw || got[i]->h != fh)
        {
            err = std::string(keys[i]) + " is " + std::to_string(got[i]->c) + "x" + std::to_string(got[i]->h) + "x"
                  + std::to_string(got[i]->w) + "; the config and a " + std::to_string(lb.in_w) + "x"
                  + std::to_string(lb.in_h) + " input need " + std::to_string(want_c[i]) + "x" + std::to_string(fh)
                  + "x" + std::to_string(fw);
            return false;
        }
    const ncnn::Mat obj_f = flat(obj), deltas_f = flat(deltas), feat_f = flat(feat);
    times_.inference_ms = now_ms() - t;
    t = now_ms();
    try
    {
        const litedet::Proposals props = litedet::select_proposals(c, (const float*)obj_f.data,
                                                                   (const float*)deltas_f.data, a, fw, fh, lb.in_w, lb.in_h);
        const size_t k = props.scores.size();
        if (k == 0)
        {
            times_.glue_ms = now_ms() - t;
            return true;  // nothing above the RPN's thresholds: no second stage, no detections
        }
        std::vector<float> pooled(k * feat_c);
        litedet::ps_roi_align((const float*)feat_f.data, feat_c, fh, fw, props.boxes.data(), k, 1.f / (float)c.stride,
                              c.pooled_size, c.sampling_ratio, pooled.data());
        // every RoI in one extract, laid out features_by_rois: channel f, row n = pooled[n][f]
        ncnn::Mat cols(1, (int)k, feat_c);
        for (int f = 0; f < feat_c; f++)
        {
            float* ch = cols.channel(f);
            for (size_t n = 0; n < k; n++)
                ch[n] = pooled[n * feat_c + f];
        }
        ncnn::Mat scores, box_deltas;
        times_.glue_ms = now_ms() - t;
        t = now_ms();
        {
            ncnn::Extractor ex = head_net_.create_extractor();
            if (ex.input(c.head_input_blob.c_str(), cols) != 0 || ex.extract(c.head_scores_blob.c_str(), scores) != 0
                || ex.extract(c.head_deltas_blob.c_str(), box_deltas) != 0)
            {
                err = "ncnn failed to run the head graph " + c.head_param;
                return false;
            }
        }
        const size_t c1 = (size_t)c.num_classes + 1, d = c.class_agnostic_boxes ? 4 : 4 * c1;
        if (scores.c != (int)c1 || box_deltas.c != (int)d || scores.h != (int)k || box_deltas.h != (int)k)
        {
            err = "the head gives " + std::to_string(scores.c) + " scores and " + std::to_string(box_deltas.c)
                  + " deltas for " + std::to_string(scores.h) + " of " + std::to_string(k) + " RoIs; num_classes "
                  + std::to_string(c.num_classes) + " + background needs " + std::to_string(c1) + " and "
                  + std::to_string(d);
            return false;
        }
        times_.inference_ms += now_ms() - t;
        t = now_ms();
        // back to one row per RoI, as rcnn_detections reads them
        std::vector<float> sf(k * c1), df(k * d);
        for (size_t j = 0; j < c1; j++)
            for (size_t n = 0; n < k; n++)
                sf[n * c1 + j] = scores.channel((int)j)[n];
        for (size_t j = 0; j < d; j++)
            for (size_t n = 0; n < k; n++)
                df[n * d + j] = box_deltas.channel((int)j)[n];
        for (const litedet::Candidate& cand :
             litedet::rcnn_detections(c, props.boxes.data(), k, sf.data(), df.data(), lb.in_w, lb.in_h))
            dets.push_back(litedet::map_box_back(cand, lb));
        times_.post_ms = now_ms() - t;
    }
    catch (const std::exception& e)
    {
        err = std::string("two-stage postprocess: ") + e.what();
        return false;
    }
    return true;
}

} // namespace litedet_demo
