// The keys of NAME.cfg, written once. Everything that reads or writes the config uses this
// table: each kind's config struct and reader (GflConfig in litedet_gfl.*, RpnPsroiConfig in
// litedet_rpn_psroi.*), the C API's dump
// (litedet_capi.cpp), and the generator litedet.runtime.devconfig, which parses the
// X(...) lines below (one per line: key, type, lo, hi).
//
// One table per postprocess kind the core runs, named after the kind: LITEDET_<KIND>_KEYS and
// LITEDET_<KIND>_INFO_KEYS (LITEDET_GFL_KEYS for 'gfl', NanoDet; LITEDET_RPN_PSROI_KEYS for
// 'rpn_psroi', ThunderNet and Light-Head R-CNN: two graphs; LITEDET_ARGMAX_MASK_KEYS for
// 'argmax_mask', segmentation; LITEDET_SSD_REFINE_KEYS for 'ssd_refine', RefineDet;
// LITEDET_TOPK_KEYS for 'topk', OneNet). The first key of each, kind=, says
// which table a NAME.cfg follows; litedet.runtime.devconfig finds a kind's table by that name.
//
// Types: str (non-empty, trimmed), names (comma list of non-empty trimmed names),
// labels (comma list, taken verbatim), int (in [lo, hi]), real (in [lo, hi]),
// flag (0/1), reals (comma list of numbers), ints (comma list of positive integers).
#pragma once

// 2: the precision key (fp16 | fp32 | int8: how the bundle's graph stores its weights)
#define LITEDET_CONFIG_VERSION 2

// The keys every kind has: the model files and the input's preprocessing.
#define LITEDET_COMMON_KEYS(X)                        \
  X(architecture, str, 0, 0)                          \
  X(variant, str, 0, 0)                               \
  X(precision, str, 0, 0)                             \
  X(param, str, 0, 0)                                 \
  X(bin, str, 0, 0)                                   \
  X(input_blob, str, 0, 0)                            \
  X(pixel_format, str, 0, 0)                          \
  X(mean, reals, 0, 0)                                \
  X(norm, reals, 0, 0)                                \
  X(target_size, int, 1, 65536)                       \
  X(pad_multiple, int, 1, 65536)                      \
  X(pad_mode, str, 0, 0)                              \
  X(resize_policy, str, 0, 0)                         \
  X(pad_normalized, flag, 0, 0)                       \
  X(pad_value, real, -1e30, 1e30)

#define LITEDET_GFL_KEYS(X)                        \
  X(kind, str, 0, 0)                                  \
  LITEDET_COMMON_KEYS(X)                              \
  X(strides, ints, 0, 0)                              \
  X(cls_blobs, names, 0, 0)                           \
  X(dis_blobs, names, 0, 0)                           \
  X(reg_max, int, 0, 65536)                           \
  X(center_offset, real, -1e6, 1e6)                   \
  X(score_threshold, real, 0, 1)                      \
  X(nms_threshold, real, 0, 1)                        \
  X(class_agnostic_nms, flag, 0, 0)                   \
  X(multi_label, flag, 0, 0)                          \
  X(clamp_to_input, flag, 0, 0)                       \
  X(max_detections, int, 1, 16777216)                 \
  X(num_classes, int, 1, 1048576)                     \
  X(class_names, labels, 0, 0)

#define LITEDET_RPN_PSROI_KEYS(X)                     \
  X(kind, str, 0, 0)                                  \
  LITEDET_COMMON_KEYS(X)                              \
  X(head_param, str, 0, 0)                            \
  X(head_bin, str, 0, 0)                              \
  X(stride, int, 1, 65536)                            \
  X(obj_blob, str, 0, 0)                              \
  X(deltas_blob, str, 0, 0)                           \
  X(feat_blob, str, 0, 0)                             \
  X(head_layout, str, 0, 0)                           \
  X(head_input_blob, str, 0, 0)                       \
  X(head_scores_blob, str, 0, 0)                      \
  X(head_deltas_blob, str, 0, 0)                      \
  X(anchor_sizes, reals, 0, 0)                        \
  X(anchor_ratios, reals, 0, 0)                       \
  X(anchor_offset, real, -1e6, 1e6)                   \
  X(rpn_box_weights, reals, 0, 0)                     \
  X(rpn_pre_nms_top_n, int, 1, 16777216)              \
  X(rpn_post_nms_top_n, int, 1, 16777216)             \
  X(rpn_nms_threshold, real, 0, 1)                    \
  X(rpn_min_size, real, 0, 1e6)                       \
  X(rpn_score_threshold, real, 0, 1)                  \
  X(pooled_size, int, 1, 64)                          \
  X(psroi_groups, int, 1, 65536)                      \
  X(sampling_ratio, int, 0, 64)                       \
  X(rcnn_box_weights, reals, 0, 0)                    \
  X(box_clip, real, 0, 1e6)                           \
  X(score_threshold, real, 0, 1)                      \
  X(nms_threshold, real, 0, 1)                        \
  X(max_detections, int, 1, 16777216)                 \
  X(min_size, real, 0, 1e6)                           \
  X(class_agnostic_boxes, flag, 0, 0)                 \
  X(num_classes, int, 1, 1048576)                     \
  X(class_names, labels, 0, 0)

// 'argmax_mask' (BiSeNet, DFANet): one graph ending in per-class logits, at the input's size
// (upsample=graph) or at head_stride (upsample=runtime: the core upsamples bilinearly); the
// palette is the overlay's R,G,B per class
#define LITEDET_ARGMAX_MASK_KEYS(X)                   \
  X(kind, str, 0, 0)                                  \
  LITEDET_COMMON_KEYS(X)                              \
  X(logits_blob, str, 0, 0)                           \
  X(upsample, str, 0, 0)                              \
  X(head_stride, int, 1, 64)                          \
  X(palette, reals, 0, 0)                             \
  X(num_classes, int, 1, 256)                         \
  X(class_names, labels, 0, 0)

// 'ssd_refine' (RefineDet): one graph, four outputs over all priors (cell-major then anchor per
// level): ARM offsets and softmax objectness, ODM offsets and softmax class scores (background
// first); the priors come from steps, min_sizes, aspect_ratios and clip
#define LITEDET_SSD_REFINE_KEYS(X)                    \
  X(kind, str, 0, 0)                                  \
  LITEDET_COMMON_KEYS(X)                              \
  X(arm_loc_blob, str, 0, 0)                          \
  X(arm_conf_blob, str, 0, 0)                         \
  X(odm_loc_blob, str, 0, 0)                          \
  X(odm_conf_blob, str, 0, 0)                         \
  X(steps, ints, 0, 0)                                \
  X(min_sizes, reals, 0, 0)                           \
  X(aspect_ratios, reals, 0, 0)                       \
  X(variances, reals, 0, 0)                           \
  X(clip, flag, 0, 0)                                 \
  X(objectness_threshold, real, 0, 1)                 \
  X(score_threshold, real, 0, 1)                      \
  X(nms_threshold, real, 0, 1)                        \
  X(pre_nms_top_k, int, 1, 10000000)                  \
  X(max_detections, int, 1, 10000000)                 \
  X(num_classes, int, 1, 1048576)                     \
  X(class_names, labels, 0, 0)

// 'topk' (OneNet): one graph, sigmoid class scores [C, H, W] and box distances [4, H, W] at one
// stride; the k best (class, location) pairs, no NMS unless nms_threshold < 1
#define LITEDET_TOPK_KEYS(X)                          \
  X(kind, str, 0, 0)                                  \
  LITEDET_COMMON_KEYS(X)                              \
  X(scores_blob, str, 0, 0)                           \
  X(ltrb_blob, str, 0, 0)                             \
  X(stride, int, 1, 1024)                             \
  X(center_offset, real, -1, 1)                       \
  X(score_threshold, real, 0, 1)                      \
  X(nms_threshold, real, 0, 1)                        \
  X(max_detections, int, 1, 10000000)                 \
  X(num_classes, int, 1, 1048576)                     \
  X(class_names, labels, 0, 0)

// Written by the generator for a reader's information (which bundle the assets came from);
// the readers ignore them, as it ignores every key it does not know.
#define LITEDET_GFL_INFO_KEYS(X) \
  X(param_sha256)                   \
  X(bin_sha256)
#define LITEDET_ARGMAX_MASK_INFO_KEYS(X) \
  X(param_sha256)                        \
  X(bin_sha256)
#define LITEDET_SSD_REFINE_INFO_KEYS(X) \
  X(param_sha256)                       \
  X(bin_sha256)
#define LITEDET_TOPK_INFO_KEYS(X) \
  X(param_sha256)                 \
  X(bin_sha256)
#define LITEDET_RPN_PSROI_INFO_KEYS(X) \
  X(param_sha256)                      \
  X(bin_sha256)                        \
  X(head_param_sha256)                 \
  X(head_bin_sha256)
