// Postprocess kind 'ssd_refine' (RefineDet) on the device: one graph, four outputs over all priors
// (arm_loc [N, 4], arm_conf [N, 2] softmax, odm_loc [N, 4], odm_conf [N, C + 1] softmax); decoding
// is the core's litedet::ssd_refine_outputs (litedet_ssd_refine.h), the mirror of
// runtime/kinds/ssd_refine.py. Steps named as the Python kind's: extract_outputs, ssd_refine_outputs.

#include <exception>

#include "litedet_ncnn.h"
#include "litedet_ssd_refine.h"

namespace litedet_demo {

namespace {

class SsdRefineKind : public ConfiguredKind<litedet::SsdRefineConfig, litedet::parse_ssd_refine_config>
{
public:
    std::vector<GraphFiles> graphs() const override { return {{cfg_.param, cfg_.bin}}; }
    std::vector<BlobRef> blobs() const override
    {
        return {{0, "input_blob", cfg_.input_blob, true},
                {0, "arm_loc_blob", cfg_.arm_loc_blob, false},
                {0, "arm_conf_blob", cfg_.arm_conf_blob, false},
                {0, "odm_loc_blob", cfg_.odm_loc_blob, false},
                {0, "odm_conf_blob", cfg_.odm_conf_blob, false}};
    }

    bool run(std::vector<ncnn::Net*>& nets, const ncnn::Mat& in, const litedet::Letterbox& lb, Results& results,
             StageTimes& times, std::string& err) override
    {
        ncnn::Mat out[4];  // alive until ssd_refine_outputs is done
        const double t0 = now_ms();
        if (!extract_outputs(*nets[0], in, out, err))
            return false;
        const double t1 = now_ms();
        times.inference_ms = t1 - t0;
        try
        {
            results.detections = litedet::ssd_refine_outputs(
                cfg_, (const float*)out[0].data, (const float*)out[1].data, (const float*)out[2].data,
                (const float*)out[3].data, static_cast<size_t>(out[0].h), out[3].w, lb);
        }
        catch (const std::exception& e)
        {
            err = std::string("ssd_refine_outputs: ") + e.what();
            return false;
        }
        times.post_ms = now_ms() - t1;
        return true;
    }

private:
    // The four outputs as rows x columns fp32 matrices with the same row count.
    bool extract_outputs(ncnn::Net& net, const ncnn::Mat& in, ncnn::Mat* out, std::string& err) const
    {
        ncnn::Extractor ex = net.create_extractor();
        if (ex.input(cfg_.input_blob.c_str(), in) != 0)
        {
            err = "ncnn rejected the input blob '" + cfg_.input_blob + "'";
            return false;
        }
        const std::string* names[4] = {&cfg_.arm_loc_blob, &cfg_.arm_conf_blob, &cfg_.odm_loc_blob, &cfg_.odm_conf_blob};
        const int cols[4] = {4, 2, 4, cfg_.num_classes + 1};
        for (int k = 0; k < 4; k++)
        {
            if (ex.extract(names[k]->c_str(), out[k]) != 0)  // default type: converted to unpacked fp32
            {
                err = "ncnn failed to compute output '" + *names[k] + "'";
                return false;
            }
            if (out[k].dims != 2 || out[k].w != cols[k] || out[k].h != out[0].h || out[k].elemsize != 4)
            {
                err = "output '" + *names[k] + "' has dims " + std::to_string(out[k].dims) + ", w " +
                      std::to_string(out[k].w) + ", h " + std::to_string(out[k].h) + "; expected a (rows, " +
                      std::to_string(cols[k]) + ") fp32 matrix with the rows of '" + cfg_.arm_loc_blob + "'";
                return false;
            }
        }
        return true;
    }

};

} // namespace

LITEDET_REGISTER_NCNN_KIND("ssd_refine", SsdRefineKind);

} // namespace litedet_demo
