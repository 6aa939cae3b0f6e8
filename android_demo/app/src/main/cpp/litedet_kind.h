// The postprocess kinds of the C++ core (no ncnn types): each kind's file registers how its
// NAME.cfg is parsed and written back (one key=value line per key of its table in
// litedet_config_keys.h), so the C API (litedet_capi.cpp) dumps any kind's config without
// knowing which kinds exist. The ncnn half of a kind registers itself in litedet_ncnn.h.
#pragma once

#include <cstdint>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "litedet_config_reader.h"

namespace litedet {

// The C++ type of each config type of litedet_config_keys.h: a kind's config struct has one
// member per key of its table (written by litedet.runtime.devconfig.device_config_text).
using cfg_str = std::string;
using cfg_names = std::vector<std::string>;
using cfg_labels = std::vector<std::string>;
using cfg_int = int;
using cfg_real = float;
using cfg_flag = bool;
using cfg_reals = std::vector<float>;
using cfg_ints = std::vector<int>;

// A class id per pixel of the original image (kind 'argmax_mask'), row-major, and the overlay
// colour of each class (R, G, B per class, from NAME.cfg's palette): what a segmentation kind
// returns beside (instead of) detections. Empty (0 x 0) for the other kinds.
struct LabelMask {
  int width = 0, height = 0;
  std::vector<uint8_t> labels;
  std::vector<uint8_t> palette_rgb;
  bool empty() const { return labels.empty(); }
};

// The value of the kind= key of any kind's NAME.cfg ("" when it has none): the postprocess kind
// whose key table the file follows. The form with *error returns false (the line at fault)
// when the text is not key=value lines.
inline bool config_kind(const std::string& text, std::string& kind, std::string* error) {
  std::map<std::string, std::string> kv;
  kind.clear();
  if (!cfgread::split_lines(text, kv, error)) return false;
  auto it = kv.find("kind");
  if (it != kv.end()) kind = cfgread::trim(it->second);
  return true;
}

inline std::string config_kind(const std::string& text) {
  std::string kind;
  return config_kind(text, kind, nullptr) ? kind : "";
}

// The precision key's problem ("" when it is one of the three): the graph's weights are fp16 or
// fp32, or int8 layers (8=1, written by litedet quantize) beside float ones.
inline std::string precision_problem(const std::string& p) {
  return p == "fp16" || p == "fp32" || p == "int8" ? "" : "'fp16', 'fp32' or 'int8'";
}

// Parse cfg_text with the kind's reader and write the parsed config back into out; false and
// *error (naming the key) when the text does not parse.
using ConfigDump = bool (*)(const std::string& cfg_text, std::string& out, std::string* error);

// Header-only (inline: one table per program), so every build of the core links it as it is.
inline std::map<std::string, ConfigDump>& config_dumps() {
  static std::map<std::string, ConfigDump> table;  // built on first use: safe from static init order
  return table;
}

inline bool register_config_dump(const std::string& kind, ConfigDump dump) {
  return config_dumps().emplace(kind, dump).second;
}

// nullptr when no kind of that name is registered
inline ConfigDump config_dump(const std::string& kind) {
  auto it = config_dumps().find(kind);
  return it == config_dumps().end() ? nullptr : it->second;
}

// One key=value line of a parsed config ``c`` into ``o`` (the X of a LITEDET_<KIND>_KEYS table).
#define LITEDET_DUMP_KEY(key, type, lo, hi) o << #key "=" << ::litedet::cfgread::dump_value(c.key) << "\n";

// Registers kind NAME's config dump: the text parsed by PARSE into a CFG, written back one line per
// key of its table KEYS (LITEDET_<KIND>_KEYS). One line in the kind's core file.
#define LITEDET_REGISTER_CONFIG_DUMP(NAME, CFG, PARSE, KEYS)                                              \
  static const bool litedet_config_dump_##CFG = ::litedet::register_config_dump(                        \
      NAME, [](const std::string& text, std::string& out, std::string* error) -> bool {                  \
        CFG c;                                                                                           \
        if (!PARSE(text, c, error)) return false;                                                        \
        std::ostringstream o;                                                                            \
        KEYS(LITEDET_DUMP_KEY)                                                                           \
        out = o.str();                                                                                   \
        return true;                                                                                     \
      })

inline std::vector<std::string> core_kind_names() {
  std::vector<std::string> out;
  for (const auto& kv : config_dumps()) out.push_back(kv.first);
  return out;
}

}  // namespace litedet
