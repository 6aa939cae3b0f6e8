// Postprocess kind 'rpn_psroi' (ThunderNet, Light-Head R-CNN) on the device: two graphs. Steps
// named as runtime/kinds/rpn_psroi.py's, in the order the data moves:
//   rpn_maps      stage 1's objectness [A,H,W], deltas [4A,H,W] and PS features [G*P*P,H,W]
//   proposals_of  anchors, decode, NMS, top-N (litedet::select_proposals, litedet_rpn_psroi.h)
//   pool_rois     PSRoIAlign of every proposal, laid out as the head's input (features_by_rois:
//                 a [G*P*P, N, 1] blob, so the head's fcs run as 1x1 convolutions in one extract)
//   run_head      the head graph on every RoI at once -> one row of scores / deltas per RoI
//   detections_of per-class decode, NMS, map back (litedet::rcnn_detections)

#include <exception>

#include "litedet_ncnn.h"
#include "litedet_rpn_psroi.h"

namespace litedet_demo {

namespace {

// A CHW (or HW) output as one contiguous fp32 block: ncnn pads each channel to cstep.
ncnn::Mat flat(const ncnn::Mat& m)
{
    return m.reshape(m.w * m.h * m.d * m.c);
}

// Stage 1's three maps, contiguous, with their common size.
struct RpnMaps
{
    ncnn::Mat obj, deltas, feat;
    int anchors = 0, fw = 0, fh = 0, feat_c = 0;
};

class RpnPsroiKind : public ConfiguredKind<litedet::RpnPsroiConfig, litedet::parse_rpn_psroi_config>
{
public:
    std::vector<GraphFiles> graphs() const override { return {{cfg_.param, cfg_.bin}, {cfg_.head_param, cfg_.head_bin}}; }
    std::vector<BlobRef> blobs() const override
    {
        return {{0, "input_blob", cfg_.input_blob, true},          {0, "obj_blob", cfg_.obj_blob, false},
                {0, "deltas_blob", cfg_.deltas_blob, false},       {0, "feat_blob", cfg_.feat_blob, false},
                {1, "head_input_blob", cfg_.head_input_blob, true}, {1, "head_scores_blob", cfg_.head_scores_blob, false},
                {1, "head_deltas_blob", cfg_.head_deltas_blob, false}};
    }
    bool has_glue() const override { return true; }

    bool run(std::vector<ncnn::Net*>& nets, const ncnn::Mat& in, const litedet::Letterbox& lb,
             Results& results, StageTimes& times, std::string& err) override
    {
        std::vector<litedet::Detection>& dets = results.detections;
        RpnMaps maps;
        double t = now_ms();
        if (!rpn_maps(*nets[0], in, lb, maps, err))
            return false;
        times.inference_ms = now_ms() - t;
        try
        {
            t = now_ms();
            const litedet::Proposals props = proposals_of(maps, lb);
            const size_t k = props.scores.size();
            if (k == 0)
            {
                times.glue_ms = now_ms() - t;
                return true;  // nothing above the RPN's thresholds: no second stage, no detections
            }
            const ncnn::Mat cols = pool_rois(maps, props);
            times.glue_ms = now_ms() - t;
            t = now_ms();
            std::vector<float> scores, deltas;
            if (!run_head(*nets[1], cols, k, scores, deltas, err))
                return false;
            times.inference_ms += now_ms() - t;
            t = now_ms();
            dets = detections_of(props, scores, deltas, lb);
            times.post_ms = now_ms() - t;
        }
        catch (const std::exception& e)
        {
            err = std::string("two-stage postprocess: ") + e.what();
            return false;
        }
        return true;
    }

private:
    bool rpn_maps(ncnn::Net& net, const ncnn::Mat& in, const litedet::Letterbox& lb, RpnMaps& maps,
                  std::string& err) const
    {
        maps.anchors = (int)(cfg_.anchor_sizes.size() * cfg_.anchor_ratios.size());
        maps.fw = (lb.in_w + cfg_.stride - 1) / cfg_.stride;
        maps.fh = (lb.in_h + cfg_.stride - 1) / cfg_.stride;
        maps.feat_c = cfg_.psroi_groups * cfg_.pooled_size * cfg_.pooled_size;
        ncnn::Mat got[3];
        {
            ncnn::Extractor ex = net.create_extractor();
            if (ex.input(cfg_.input_blob.c_str(), in) != 0)
            {
                err = "ncnn rejected the input blob '" + cfg_.input_blob + "'";
                return false;
            }
            const std::string* blobs[3] = {&cfg_.obj_blob, &cfg_.deltas_blob, &cfg_.feat_blob};
            for (int i = 0; i < 3; i++)
                if (ex.extract(blobs[i]->c_str(), got[i]) != 0)
                {
                    err = "ncnn failed to compute output '" + *blobs[i] + "'";
                    return false;
                }
        }
        const int want_c[3] = {maps.anchors, 4 * maps.anchors, maps.feat_c};
        const char* keys[3] = {"obj_blob", "deltas_blob", "feat_blob"};
        for (int i = 0; i < 3; i++)
            if (got[i].dims != 3 || got[i].c != want_c[i] || got[i].w != maps.fw || got[i].h != maps.fh)
            {
                err = std::string(keys[i]) + " is " + std::to_string(got[i].c) + "x" + std::to_string(got[i].h) + "x"
                      + std::to_string(got[i].w) + "; the config and a " + std::to_string(lb.in_w) + "x"
                      + std::to_string(lb.in_h) + " input need " + std::to_string(want_c[i]) + "x"
                      + std::to_string(maps.fh) + "x" + std::to_string(maps.fw);
                return false;
            }
        maps.obj = flat(got[0]);
        maps.deltas = flat(got[1]);
        maps.feat = flat(got[2]);
        return true;
    }

    litedet::Proposals proposals_of(const RpnMaps& maps, const litedet::Letterbox& lb) const
    {
        return litedet::select_proposals(cfg_, (const float*)maps.obj.data, (const float*)maps.deltas.data, maps.anchors,
                                         maps.fw, maps.fh, lb.in_w, lb.in_h);
    }

    // PSRoIAlign of every proposal -> the head's input blob: channel f, row n = pooled[n][f].
    ncnn::Mat pool_rois(const RpnMaps& maps, const litedet::Proposals& props) const
    {
        const size_t k = props.scores.size();
        const int feat_c = maps.feat_c;
        std::vector<float> pooled(k * feat_c);
        litedet::ps_roi_align((const float*)maps.feat.data, feat_c, maps.fh, maps.fw, props.boxes.data(), k,
                              1.f / (float)cfg_.stride, cfg_.pooled_size, cfg_.sampling_ratio, pooled.data());
        ncnn::Mat cols(1, (int)k, feat_c);
        for (int f = 0; f < feat_c; f++)
        {
            float* ch = cols.channel(f);
            for (size_t n = 0; n < k; n++)
                ch[n] = pooled[n * feat_c + f];
        }
        return cols;
    }

    // The head on every RoI in one extract -> k rows of (C + 1) scores and D deltas.
    bool run_head(ncnn::Net& net, const ncnn::Mat& cols, size_t k, std::vector<float>& sf, std::vector<float>& df,
                  std::string& err) const
    {
        ncnn::Mat scores, box_deltas;
        {
            ncnn::Extractor ex = net.create_extractor();
            if (ex.input(cfg_.head_input_blob.c_str(), cols) != 0 || ex.extract(cfg_.head_scores_blob.c_str(), scores) != 0
                || ex.extract(cfg_.head_deltas_blob.c_str(), box_deltas) != 0)
            {
                err = "ncnn failed to run the head graph " + cfg_.head_param;
                return false;
            }
        }
        const size_t c1 = (size_t)cfg_.num_classes + 1, d = cfg_.class_agnostic_boxes ? 4 : 4 * c1;
        if (scores.c != (int)c1 || box_deltas.c != (int)d || scores.h != (int)k || box_deltas.h != (int)k)
        {
            err = "the head gives " + std::to_string(scores.c) + " scores and " + std::to_string(box_deltas.c)
                  + " deltas for " + std::to_string(scores.h) + " of " + std::to_string(k) + " RoIs; num_classes "
                  + std::to_string(cfg_.num_classes) + " + background needs " + std::to_string(c1) + " and "
                  + std::to_string(d);
            return false;
        }
        // back to one row per RoI, as rcnn_detections reads them
        sf.assign(k * c1, 0.f);
        df.assign(k * d, 0.f);
        for (size_t j = 0; j < c1; j++)
            for (size_t n = 0; n < k; n++)
                sf[n * c1 + j] = scores.channel((int)j)[n];
        for (size_t j = 0; j < d; j++)
            for (size_t n = 0; n < k; n++)
                df[n * d + j] = box_deltas.channel((int)j)[n];
        return true;
    }

    std::vector<litedet::Detection> detections_of(const litedet::Proposals& props, const std::vector<float>& scores,
                                                  const std::vector<float>& deltas, const litedet::Letterbox& lb) const
    {
        std::vector<litedet::Detection> dets;
        for (const litedet::Candidate& cand : litedet::rcnn_detections(cfg_, props.boxes.data(), props.scores.size(),
                                                                         scores.data(), deltas.data(), lb.in_w, lb.in_h))
            dets.push_back(litedet::map_box_back(cand, lb));
        return dets;
    }

};

} // namespace

LITEDET_REGISTER_NCNN_KIND("rpn_psroi", RpnPsroiKind);

} // namespace litedet_demo
