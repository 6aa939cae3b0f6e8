// File reading shared by the static aarch64 programs that count the C++ core's steps under qemu
// (two_stage_glue.cpp, mask_post.cpp).
#pragma once

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

// A file of raw float32 values; false when it cannot be read.
inline bool read_floats(const char* path, std::vector<float>& out) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) return false;
  out.resize(static_cast<size_t>(f.tellg()) / sizeof(float));
  f.seekg(0);
  return static_cast<bool>(f.read(reinterpret_cast<char*>(out.data()), out.size() * sizeof(float)));
}

// A text file's whole text (NAME.cfg); "" when it cannot be read.
inline std::string read_text(const char* path) {
  std::ifstream f(path);
  std::stringstream text;
  text << f.rdbuf();
  return text.str();
}
