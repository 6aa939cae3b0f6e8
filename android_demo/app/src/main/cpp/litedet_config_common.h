// What every kind's NAME.cfg reader shares (no ncnn types): the version= and kind= checks that
// come first (so another kind's config fails on its kind, not on its first missing key), the
// reading of the kind's key table, and the cross-checks of the common keys (LITEDET_COMMON_KEYS)
// and of the class names every kind has.
#pragma once

#include <map>
#include <string>

#include "litedet_config_keys.h"
#include "litedet_config_reader.h"
#include "litedet_kind.h"
#include "litedet_letterbox.h"

namespace litedet {

// Split text into keys, check version= and kind=, then read_keys(reader) fills the config
// (the kind's X-macro table); false and *error naming the key otherwise.
template <class ReadKeys>
bool read_kind_config(const std::string& text, const std::string& kind, const std::string& parser, ReadKeys read_keys,
                      std::string* error) {
  auto fail = [&](const std::string& msg) {
    if (error) *error = msg;
    return false;
  };
  std::map<std::string, std::string> kv;
  if (!cfgread::split_lines(text, kv, error)) return false;
  cfgread::Reader r(std::move(kv));
  const long long version = r.integer("version", 0, 1 << 20);
  if (!r.has_error() && version != LITEDET_CONFIG_VERSION)
    return fail("config key 'version' is " + std::to_string(version) + "; this litedet core reads version " +
                std::to_string(LITEDET_CONFIG_VERSION));
  const std::string said = r.str("kind");
  if (!r.has_error() && said != kind)
    return fail("config key 'kind' is '" + said + "'; " + parser + " reads '" + kind + "' configs");
  read_keys(r);
  return r.has_error() ? fail(r.error) : true;
}

// The problem with the common keys of a parsed config ("" when there is none).
template <class Cfg>
std::string common_config_problem(const Cfg& c) {
  if (c.pixel_format != "bgr" && c.pixel_format != "rgb") return "config key 'pixel_format' must be 'bgr' or 'rgb'";
  if (!precision_problem(c.precision).empty())
    return "config key 'precision' is '" + c.precision + "'; expected " + precision_problem(c.precision);
  if (c.pad_mode != "stride_multiple" && c.pad_mode != "fixed")
    return "config key 'pad_mode' must be 'stride_multiple' or 'fixed'";
  if (resize_policy_code(c.resize_policy) < 0)
    return "config key 'resize_policy' is '" + c.resize_policy +
           "'; expected 'letterbox', 'letterbox_top_left', 'stretch' or 'stretch_multiple'";
  if (c.mean.size() != c.norm.size()) return "config keys 'mean' and 'norm' need one value per channel each";
  if (c.target_size % c.pad_multiple) return "config key 'target_size' must be a multiple of 'pad_multiple'";
  // every kind names its classes (num_classes and class_names in its key table)
  if (static_cast<long long>(c.class_names.size()) != c.num_classes)
    return "config key 'class_names' has " + std::to_string(c.class_names.size()) + " names but 'num_classes' is " +
           std::to_string(c.num_classes);
  return "";
}

}  // namespace litedet
