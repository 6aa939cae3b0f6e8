// Postprocess kind 'gfl' (NanoDet, NanoDet-Plus) on the device: one graph, per stride a class
// score blob [H*W, num_classes] (sigmoid in the graph) and a distribution blob
// [H*W, 4*(reg_max+1)]; decoding is the core's litedet::postprocess (litedet_gfl.h), the
// mirror of runtime/kinds/gfl.py:postprocess_outputs. Steps named as the Python kind's:
// extract_levels (the graph's outputs, shape-checked), postprocess_outputs.

#include <exception>

#include "demo_utils.h"
#include "litedet_gfl.h"
#include "litedet_ncnn.h"

namespace litedet_demo {

namespace {

TensorShape shape_of(const ncnn::Mat& m)
{
    return TensorShape{m.dims, m.w, m.h, m.d, m.c, m.elemsize, m.elempack};
}

class GflKind : public ConfiguredKind<litedet::GflConfig, litedet::parse_gfl_config>
{
public:
    std::vector<GraphFiles> graphs() const override { return {{cfg_.param, cfg_.bin}}; }
    std::vector<BlobRef> blobs() const override
    {
        std::vector<BlobRef> out{{0, "input_blob", cfg_.input_blob, true}};
        for (size_t i = 0; i < cfg_.strides.size(); i++)
        {
            const std::string s = " (stride " + std::to_string(cfg_.strides[i]) + ")";
            out.push_back({0, "cls_blobs" + s, cfg_.cls_blobs[i], false});
            out.push_back({0, "dis_blobs" + s, cfg_.dis_blobs[i], false});
        }
        return out;
    }

    bool run(std::vector<ncnn::Net*>& nets, const ncnn::Mat& in, const litedet::Letterbox& lb,
             Results& results, StageTimes& times, std::string& err) override
    {
        std::vector<litedet::Detection>& dets = results.detections;
        // every output Mat stays alive until postprocess_outputs is done
        const size_t n = cfg_.strides.size();
        std::vector<ncnn::Mat> cls(n), dis(n);
        std::vector<litedet::LevelOutput> levels(n);
        const double t0 = now_ms();
        if (!extract_levels(*nets[0], in, lb, cls, dis, levels, err))
            return false;
        const double t1 = now_ms();
        times.inference_ms = t1 - t0;
        const bool ok = postprocess_outputs(levels, lb, dets, err);
        times.post_ms = now_ms() - t1;
        return ok;
    }

private:
    // The graph's outputs per stride, checked against the config and the input's size.
    bool extract_levels(ncnn::Net& net, const ncnn::Mat& in, const litedet::Letterbox& lb, std::vector<ncnn::Mat>& cls,
                        std::vector<ncnn::Mat>& dis, std::vector<litedet::LevelOutput>& levels, std::string& err) const
    {
        ncnn::Extractor ex = net.create_extractor();
        if (ex.input(cfg_.input_blob.c_str(), in) != 0)
        {
            err = "ncnn rejected the input blob '" + cfg_.input_blob + "'";
            return false;
        }
        const int dist_cols = 4 * (cfg_.reg_max + 1);
        for (size_t i = 0; i < cfg_.strides.size(); i++)
        {
            const int s = cfg_.strides[i];
            const int rows_expected = grid_rows(lb.in_w, lb.in_h, s);
            for (const auto& blob : {std::make_pair(&cfg_.cls_blobs[i], &cls[i]), std::make_pair(&cfg_.dis_blobs[i], &dis[i])})
                if (ex.extract(blob.first->c_str(), *blob.second) != 0)
                {
                    err = "ncnn failed to compute output '" + *blob.first + "'";
                    return false;
                }
            int cls_rows = 0, dis_rows = 0;
            if (!check_level_output(shape_of(cls[i]), cfg_.cls_blobs[i], "cls_blobs", s, cfg_.num_classes, "num_classes",
                                    rows_expected, cls_rows, err)
                || !check_level_output(shape_of(dis[i]), cfg_.dis_blobs[i], "dis_blobs", s, dist_cols, "4*(reg_max+1)",
                                       rows_expected, dis_rows, err))
                return false;
            levels[i] = litedet::LevelOutput{(const float*)cls[i].data, (const float*)dis[i].data, cls_rows, s};
        }
        return true;
    }

    bool postprocess_outputs(const std::vector<litedet::LevelOutput>& levels, const litedet::Letterbox& lb,
                             std::vector<litedet::Detection>& dets, std::string& err) const
    {
        try
        {
            dets = litedet::postprocess(cfg_, levels, lb);
            return true;
        }
        catch (const std::exception& e)
        {
            err = std::string("postprocess: ") + e.what();
            return false;
        }
    }

};

} // namespace

LITEDET_REGISTER_NCNN_KIND("gfl", GflKind);

} // namespace litedet_demo
