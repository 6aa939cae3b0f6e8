// The NAME.cfg reader shared by the config parsers of every postprocess kind (litedet_gfl.cpp
// for gfl, litedet_rpn_psroi.cpp for rpn_psroi): key=value lines, '#' comments, typed readers
// named after the config types of litedet_config_keys.h. Internal to the core.
#pragma once

#include <cmath>
#include <cstdio>
#include <locale>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace litedet {
namespace cfgread {

inline std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (true) {
    std::size_t comma = s.find(',', start);
    out.push_back(s.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

inline std::string trim(const std::string& s) {
  const char* ws = " \t\r\n";
  std::size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  std::size_t e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

// Locale-independent (a decimal comma locale must not change the model), whole-token parse.
inline bool parse_double(const std::string& raw, double& v) {
  std::string s = trim(raw);
  if (s.empty()) return false;
  std::istringstream in(s);
  in.imbue(std::locale::classic());
  in >> v;
  if (in.fail()) return false;
  in >> std::ws;
  return in.eof() && std::isfinite(v);
}

inline bool parse_long(const std::string& raw, long long& v) {
  std::string s = trim(raw);
  std::size_t i = 0;
  bool neg = false;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) neg = s[i++] == '-';
  if (i >= s.size()) return false;
  long long acc = 0;
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    acc = acc * 10 + (s[i] - '0');
    if (acc > (1LL << 40)) return false;
  }
  v = neg ? -acc : acc;
  return true;
}

class Reader {
 public:
  explicit Reader(std::map<std::string, std::string> kv) : kv_(std::move(kv)) {}
  std::string error;

  bool has_error() const { return !error.empty(); }

  const std::string* raw(const std::string& key) {
    if (has_error()) return nullptr;
    auto it = kv_.find(key);
    if (it == kv_.end()) {
      error = "config key '" + key + "' is missing";
      return nullptr;
    }
    return &it->second;
  }
  void bad(const std::string& key, const std::string& value, const std::string& want) {
    if (!has_error()) error = "config key '" + key + "' has value '" + value + "'; expected " + want;
  }

  std::string str(const std::string& key, bool allow_empty = false) {
    const std::string* v = raw(key);
    if (!v) return "";
    std::string s = trim(*v);
    if (s.empty() && !allow_empty) bad(key, *v, "a non-empty string");
    return s;
  }
  long long integer(const std::string& key, long long lo, long long hi) {
    const std::string* v = raw(key);
    long long x = 0;
    if (!v) return 0;
    if (!parse_long(*v, x) || x < lo || x > hi)
      bad(key, *v, "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return x;
  }
  // Parsed as double, rounded to float once: the same value as np.float32(python_float).
  float real(const std::string& key, double lo, double hi, const std::string& want) {
    const std::string* v = raw(key);
    double x = 0;
    if (!v) return 0.f;
    if (!parse_double(*v, x) || x < lo || x > hi) bad(key, *v, want);
    return static_cast<float>(x);
  }
  bool boolean(const std::string& key) {
    const std::string* v = raw(key);
    if (!v) return false;
    std::string s = trim(*v);
    if (s == "1" || s == "true") return true;
    if (s == "0" || s == "false") return false;
    bad(key, *v, "0 or 1");
    return false;
  }
  std::vector<std::string> strings(const std::string& key, bool trim_items) {
    const std::string* v = raw(key);
    std::vector<std::string> out;
    if (!v) return out;
    // class names are taken verbatim (they may contain spaces); only a trailing CR is dropped
    std::string s = *v;
    if (!s.empty() && s.back() == '\r') s.pop_back();
    for (std::string& item : split_commas(s)) {
      if (trim_items) item = trim(item);
      if (item.empty()) {
        bad(key, *v, "a comma-separated list of non-empty names");
        return {};
      }
      out.push_back(item);
    }
    return out;
  }
  std::vector<float> reals(const std::string& key) {
    std::vector<float> out;
    for (const std::string& item : strings(key, true)) {
      double x = 0;
      if (!parse_double(item, x)) {
        bad(key, *raw(key), "a comma-separated list of numbers");
        return {};
      }
      out.push_back(static_cast<float>(x));
    }
    return out;
  }
  // One reader per config type of litedet_config_keys.h.
  std::string read_str(const std::string& key, double, double) { return str(key); }
  std::vector<std::string> read_names(const std::string& key, double, double) { return strings(key, true); }
  std::vector<std::string> read_labels(const std::string& key, double, double) { return strings(key, false); }
  int read_int(const std::string& key, double lo, double hi) {
    return static_cast<int>(integer(key, static_cast<long long>(lo), static_cast<long long>(hi)));
  }
  float read_real(const std::string& key, double lo, double hi) {
    std::ostringstream want;
    want.imbue(std::locale::classic());
    want << "a number";
    if (lo > -1e6 || hi < 1e6) want << " in [" << lo << ", " << hi << "]";
    return real(key, lo, hi, want.str());
  }
  bool read_flag(const std::string& key, double, double) { return boolean(key); }
  std::vector<float> read_reals(const std::string& key, double, double) { return reals(key); }
  std::vector<int> read_ints(const std::string& key, double, double) { return ints(key); }

  std::vector<int> ints(const std::string& key) {
    std::vector<int> out;
    for (const std::string& item : strings(key, true)) {
      long long x = 0;
      if (!parse_long(item, x) || x <= 0 || x > (1 << 20)) {
        bad(key, *raw(key), "a comma-separated list of positive integers");
        return {};
      }
      out.push_back(static_cast<int>(x));
    }
    return out;
  }

 private:
  std::map<std::string, std::string> kv_;
};


// key -> raw value of every key=value line; false (and *error) on a malformed or repeated line.
inline bool split_lines(const std::string& text, std::map<std::string, std::string>& kv, std::string* error) {
  auto fail = [&](const std::string& msg) {
    if (error) *error = msg;
    return false;
  };
  std::istringstream lines(text);
  std::string line;
  int lineno = 0;
  while (std::getline(lines, line)) {
    ++lineno;
    std::string t = trim(line);
    if (t.empty() || t[0] == '#') continue;
    std::size_t eq = line.find('=');
    if (eq == std::string::npos)
      return fail("config line " + std::to_string(lineno) + " ('" + (t.size() > 60 ? t.substr(0, 60) + "..." : t) +
                  "') is not key=value");
    std::string key = trim(line.substr(0, eq));
    if (key.empty()) return fail("config line " + std::to_string(lineno) + " has an empty key");
    if (kv.count(key)) return fail("config key '" + key + "' appears twice (line " + std::to_string(lineno) + ")");
    kv[key] = line.substr(eq + 1);
  }

  return true;
}

// A parsed value written back as config text (floats with 9 significant digits: they round-trip).
inline std::string fmt_float(float v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(v));  // round-trips a float
  return buf;
}
template <class T, class F>
std::string join(const std::vector<T>& v, F f) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + f(v[i]);
  return s;
}
inline std::string dump_value(const std::string& v) { return v; }
inline std::string dump_value(int v) { return std::to_string(v); }
inline std::string dump_value(float v) { return fmt_float(v); }
inline std::string dump_value(bool v) { return v ? "1" : "0"; }
inline std::string dump_value(const std::vector<std::string>& v) {
  return join(v, [](const std::string& s) { return s; });
}
inline std::string dump_value(const std::vector<int>& v) { return join(v, [](int x) { return std::to_string(x); }); }
inline std::string dump_value(const std::vector<float>& v) { return join(v, fmt_float); }

}  // namespace cfgread
}  // namespace litedet
