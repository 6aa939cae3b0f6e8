// Postprocess kind 'topk' (OneNet) on the device: one graph, sigmoid class scores [C, H, W] and box
// distances [4, H, W] at one stride; decoding is the core's litedet::topk_outputs (litedet_topk.h),
// the mirror of runtime/kinds/topk.py. Steps named as the Python kind's: extract_maps, topk_outputs.

#include <exception>

#include "litedet_ncnn.h"
#include "litedet_topk.h"

namespace litedet_demo {

namespace {

class TopkKind : public ConfiguredKind<litedet::TopkConfig, litedet::parse_topk_config>
{
public:
    std::vector<GraphFiles> graphs() const override { return {{cfg_.param, cfg_.bin}}; }
    std::vector<BlobRef> blobs() const override
    {
        return {{0, "input_blob", cfg_.input_blob, true}, {0, "scores_blob", cfg_.scores_blob, false},
                {0, "ltrb_blob", cfg_.ltrb_blob, false}};
    }

    bool run(std::vector<ncnn::Net*>& nets, const ncnn::Mat& in, const litedet::Letterbox& lb, Results& results,
             StageTimes& times, std::string& err) override
    {
        ncnn::Mat scores, ltrb;  // alive until topk_outputs is done
        const double t0 = now_ms();
        if (!extract_maps(*nets[0], in, scores, ltrb, err))
            return false;
        const double t1 = now_ms();
        times.inference_ms = t1 - t0;
        try
        {
            results.detections = litedet::topk_outputs(cfg_, (const float*)scores.data, scores.c, scores.h, scores.w,
                                                       scores.cstep, (const float*)ltrb.data, ltrb.cstep, lb);
        }
        catch (const std::exception& e)
        {
            err = std::string("topk_outputs: ") + e.what();
            return false;
        }
        times.post_ms = now_ms() - t1;
        return true;
    }

private:
    // The two maps as c x h x w fp32 planes (unpacked), of the same h x w.
    bool extract_maps(ncnn::Net& net, const ncnn::Mat& in, ncnn::Mat& scores, ncnn::Mat& ltrb, std::string& err) const
    {
        ncnn::Extractor ex = net.create_extractor();
        if (ex.input(cfg_.input_blob.c_str(), in) != 0)
        {
            err = "ncnn rejected the input blob '" + cfg_.input_blob + "'";
            return false;
        }
        if (ex.extract(cfg_.scores_blob.c_str(), scores) != 0 || ex.extract(cfg_.ltrb_blob.c_str(), ltrb) != 0)
        {
            err = "ncnn failed to compute output '" + cfg_.scores_blob + "' or '" + cfg_.ltrb_blob + "'";
            return false;
        }
        if (scores.dims != 3 || scores.elempack != 1 || scores.elemsize != 4 || ltrb.dims != 3 || ltrb.c != 4 ||
            ltrb.elempack != 1 || ltrb.elemsize != 4 || ltrb.h != scores.h || ltrb.w != scores.w)
        {
            err = "outputs '" + cfg_.scores_blob + "' and '" + cfg_.ltrb_blob +
                  "' must be fp32 planes (num_classes, h, w) and (4, h, w)";
            return false;
        }
        return true;
    }

};

} // namespace

LITEDET_REGISTER_NCNN_KIND("topk", TopkKind);

} // namespace litedet_demo
