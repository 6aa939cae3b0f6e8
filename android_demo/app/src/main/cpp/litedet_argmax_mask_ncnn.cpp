// Postprocess kind 'argmax_mask' (BiSeNet, DFANet) on the device: one graph whose logits blob is
// [num_classes, H, W] at the input's size (upsample=graph) or at head_stride (upsample=runtime);
// decoding is the core's litedet::segment_outputs (litedet_argmax_mask.h), the mirror of
// runtime/kinds/argmax_mask.py. Steps named as the Python kind's: extract_logits, segment_outputs.

#include <exception>

#include "litedet_argmax_mask.h"
#include "litedet_ncnn.h"

namespace litedet_demo {

namespace {

class ArgmaxMaskKind : public ConfiguredKind<litedet::ArgmaxMaskConfig, litedet::parse_argmax_mask_config>
{
public:
    std::vector<GraphFiles> graphs() const override { return {{cfg_.param, cfg_.bin}}; }
    std::vector<BlobRef> blobs() const override
    {
        return {{0, "input_blob", cfg_.input_blob, true}, {0, "logits_blob", cfg_.logits_blob, false}};
    }

    bool run(std::vector<ncnn::Net*>& nets, const ncnn::Mat& in, const litedet::Letterbox& lb, Results& results,
             StageTimes& times, std::string& err) override
    {
        ncnn::Mat logits;  // alive until segment_outputs is done
        const double t0 = now_ms();
        if (!extract_logits(*nets[0], in, logits, err))
            return false;
        const double t1 = now_ms();
        times.inference_ms = t1 - t0;
        try
        {
            results.mask = litedet::segment_outputs(cfg_, (const float*)logits.data, logits.c, logits.h, logits.w,
                                                    logits.cstep, lb);
        }
        catch (const std::exception& e)
        {
            err = std::string("segment_outputs: ") + e.what();
            return false;
        }
        times.post_ms = now_ms() - t1;
        return true;
    }

private:
    // The logits as c x h x w fp32 planes (unpacked: elempack 1).
    bool extract_logits(ncnn::Net& net, const ncnn::Mat& in, ncnn::Mat& logits, std::string& err) const
    {
        ncnn::Extractor ex = net.create_extractor();
        if (ex.input(cfg_.input_blob.c_str(), in) != 0)
        {
            err = "ncnn rejected the input blob '" + cfg_.input_blob + "'";
            return false;
        }
        if (ex.extract(cfg_.logits_blob.c_str(), logits) != 0)  // default type: converted to unpacked fp32
        {
            err = "ncnn failed to compute output '" + cfg_.logits_blob + "'";
            return false;
        }
        if (logits.dims != 3 || logits.elempack != 1 || logits.elemsize != 4)
        {
            err = "output '" + cfg_.logits_blob + "' has dims " + std::to_string(logits.dims) + ", elempack " +
                  std::to_string(logits.elempack) + ", elemsize " + std::to_string(logits.elemsize) +
                  "; expected fp32 class planes (num_classes, h, w)";
            return false;
        }
        return true;
    }

};

} // namespace

LITEDET_REGISTER_NCNN_KIND("argmax_mask", ArgmaxMaskKind);

} // namespace litedet_demo
