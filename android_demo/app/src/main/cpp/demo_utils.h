// litedet Android demo: small pieces of logic that need neither Android nor
// ncnn (model discovery from the asset listing, camera size choice, the FPS
// meter, the output shape check). Plain C++17, header only; host_tests/
// compiles and checks it with g++ on a desktop.

#ifndef LITEDET_DEMO_DEMO_UTILS_H
#define LITEDET_DEMO_DEMO_UTILS_H

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace litedet_demo {

inline bool ends_with(const std::string& s, const std::string& suffix)
{
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The models in the assets folder: every NAME.cfg gives NAME (sorted, unique).
// `litedet android push BUNDLE --name NAME` writes NAME.param, NAME.bin and
// NAME.cfg, so a pushed model shows up here without a code edit. Hidden files
// and names with a path separator are skipped.
inline std::vector<std::string> model_names_from_asset_files(const std::vector<std::string>& files)
{
    static const std::string ext = ".cfg";
    std::vector<std::string> names;
    for (const std::string& f : files)
    {
        if (!ends_with(f, ext) || f.size() == ext.size() || f[0] == '.')
            continue;
        if (f.find('/') != std::string::npos || f.find('\\') != std::string::npos)
            continue;
        names.push_back(f.substr(0, f.size() - ext.size()));
    }
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    return names;
}

inline std::string join(const std::vector<std::string>& items, const char* sep)
{
    std::string out;
    for (size_t i = 0; i < items.size(); i++)
    {
        if (i) out += sep;
        out += items[i];
    }
    return out;
}

// Text safe for JNI's NewStringUTF, which takes "modified UTF-8": valid 1- to
// 3-byte UTF-8 sequences are kept; NUL, 4-byte sequences (outside the BMP) and
// invalid bytes become '?'. Config text such as class names may hold anything.
inline std::string jni_safe_utf8(const std::string& s)
{
    std::string out;
    out.reserve(s.size());
    size_t i = 0;
    while (i < s.size())
    {
        const unsigned char c = (unsigned char)s[i];
        size_t n = 0;
        if (c >= 0x01 && c < 0x80)
            n = 1;
        else if (c >= 0xC2 && c < 0xE0)
            n = 2;
        else if (c >= 0xE0 && c < 0xF0)
            n = 3;
        bool ok = n > 0 && i + n <= s.size();
        for (size_t k = 1; ok && k < n; k++)
            ok = ((unsigned char)s[i + k] & 0xC0) == 0x80;
        if (ok && n == 3)
        {
            const unsigned char c1 = (unsigned char)s[i + 1];
            ok = !(c == 0xE0 && c1 < 0xA0);  // overlong
        }
        if (ok)
        {
            out.append(s, i, n);
            i += n;
        }
        else
        {
            out += '?';
            i += 1;
            // skip the continuation bytes of a rejected sequence
            while (i < s.size() && ((unsigned char)s[i] & 0xC0) == 0x80)
                i++;
        }
    }
    return out;
}

// Camera stream size choice. `sizes` are the YUV output sizes the camera
// offers (landscape, sensor orientation). Prefer exactly want_w x want_h, then
// the smallest size that covers it with the same aspect ratio, then the
// smallest that covers it at all, then the largest one offered.
struct StreamSize
{
    int w;
    int h;
};

inline StreamSize choose_stream_size(const std::vector<StreamSize>& sizes, int want_w, int want_h)
{
    if (sizes.empty())
        return StreamSize{want_w, want_h};
    const StreamSize* best = nullptr;
    auto area = [](const StreamSize& s) { return (long long)s.w * s.h; };
    // 1. exact
    for (const StreamSize& s : sizes)
        if (s.w == want_w && s.h == want_h)
            return s;
    // 2. covers, same aspect
    for (const StreamSize& s : sizes)
        if (s.w >= want_w && s.h >= want_h && (long long)s.w * want_h == (long long)s.h * want_w)
            if (!best || area(s) < area(*best))
                best = &s;
    if (best)
        return *best;
    // 3. covers
    for (const StreamSize& s : sizes)
        if (s.w >= want_w && s.h >= want_h)
            if (!best || area(s) < area(*best))
                best = &s;
    if (best)
        return *best;
    // 4. largest
    for (const StreamSize& s : sizes)
        if (!best || area(s) > area(*best))
            best = &s;
    return *best;
}

// Frames per second, averaged over the last `window` frame intervals.
class FpsMeter
{
public:
    explicit FpsMeter(int window = 10) : window_(window < 1 ? 1 : window) {}

    // now_ms: a monotonic clock in milliseconds (ncnn::get_current_time()).
    void tick(double now_ms)
    {
        if (last_ms_ >= 0.0 && now_ms > last_ms_)
        {
            intervals_.push_back(now_ms - last_ms_);
            if ((int)intervals_.size() > window_)
                intervals_.erase(intervals_.begin());
        }
        last_ms_ = now_ms;
    }

    // 0 until one interval has been seen.
    float fps() const
    {
        if (intervals_.empty())
            return 0.f;
        double sum = 0.0;
        for (double d : intervals_)
            sum += d;
        return (float)(1000.0 * intervals_.size() / sum);
    }

    void reset()
    {
        intervals_.clear();
        last_ms_ = -1.0;
    }

private:
    int window_;
    double last_ms_ = -1.0;
    std::vector<double> intervals_;
};

// What the network's output tensor looks like (ncnn::Mat's fields, copied so
// this check compiles without ncnn): dims, w (columns), h, d, c, elemsize,
// elempack.
struct TensorShape
{
    int dims;
    int w, h, d, c;
    std::size_t elemsize;
    int elempack;
};

// Check one per-stride output against what the config says: a [rows, cols]
// fp32 matrix (ncnn rows = h, cols = w; a [1, rows, cols] tensor is accepted
// too). On success `rows` holds h. On failure `error` names the blob, the
// config key that named it, what it is and what it should be.
inline bool check_level_output(const TensorShape& t, const std::string& blob, const std::string& cfg_key, int stride,
                               int expected_cols, const std::string& cols_meaning, int expected_rows,
                               int& rows, std::string& error)
{
    const std::string where = "output blob '" + blob + "' (" + cfg_key + ", stride " + std::to_string(stride) + ")";
    if (t.dims <= 0 || t.w <= 0)
    {
        error = where + " is empty: the net produced nothing for it";
        return false;
    }
    if (t.elemsize != 4 || t.elempack != 1)
    {
        error = where + " has elemsize " + std::to_string(t.elemsize) + " and elempack " + std::to_string(t.elempack)
                + "; expected unpacked fp32 (elemsize 4, elempack 1)";
        return false;
    }
    const bool matrix = t.dims == 2 || (t.dims == 3 && t.c == 1) || (t.dims == 4 && t.c == 1 && t.d == 1);
    if (!matrix)
    {
        error = where + " has dims=" + std::to_string(t.dims) + " (w=" + std::to_string(t.w) + " h=" + std::to_string(t.h)
                + " d=" + std::to_string(t.d) + " c=" + std::to_string(t.c) + "); expected a 2-D [rows, "
                + std::to_string(expected_cols) + "] matrix";
        return false;
    }
    if (t.w != expected_cols)
    {
        error = where + " has " + std::to_string(t.w) + " columns (ncnn w); expected " + std::to_string(expected_cols)
                + " = " + cols_meaning;
        return false;
    }
    if (expected_rows > 0 && t.h != expected_rows)
    {
        error = where + " has " + std::to_string(t.h) + " rows (ncnn h); expected " + std::to_string(expected_rows)
                + " = one per cell of the stride-" + std::to_string(stride) + " grid";
        return false;
    }
    rows = t.h;
    return true;
}

// Cells of the stride-s grid over an in_w x in_h network input (ceil, as the
// Python runtime does).
inline int grid_rows(int in_w, int in_h, int stride)
{
    if (stride <= 0)
        return 0;
    return ((in_w + stride - 1) / stride) * ((in_h + stride - 1) / stride);
}

// A colour for a class index: distinct hues, no table of class colours.
inline void label_color(int label, std::uint8_t& r, std::uint8_t& g, std::uint8_t& b)
{
    // golden-angle hue walk, full saturation, HSV -> RGB
    const float hue = (float)((unsigned)label * 137u % 360u) / 60.f;
    const int sector = (int)hue % 6;
    const float f = hue - (float)(int)hue;
    const std::uint8_t hi = 255, lo = 40;
    const std::uint8_t up = (std::uint8_t)(lo + (hi - lo) * f);
    const std::uint8_t down = (std::uint8_t)(hi - (hi - lo) * f);
    switch (sector)
    {
    case 0: r = hi; g = up; b = lo; break;
    case 1: r = down; g = hi; b = lo; break;
    case 2: r = lo; g = hi; b = up; break;
    case 3: r = lo; g = down; b = hi; break;
    case 4: r = up; g = lo; b = hi; break;
    default: r = hi; g = lo; b = down; break;
    }
}

// Blend an RGBA frame (stride in bytes) with a class mask of the same size: each pixel becomes
// (1 - alpha) * pixel + alpha * colour of its class (palette_rgb: R, G, B per class, rounded to
// the nearest integer), as runtime/visualize.py's draw_mask; alpha untouched. False (nothing
// drawn) when the sizes disagree or a label has no colour.
inline bool blend_mask(unsigned char* rgba, int w, int h, int stride, const std::uint8_t* labels, int mask_w, int mask_h,
                       const std::vector<std::uint8_t>& palette_rgb, float alpha)
{
    if (!rgba || !labels || w != mask_w || h != mask_h || stride < 4 * w || palette_rgb.size() % 3)
        return false;
    const std::size_t classes = palette_rgb.size() / 3;
    for (int i = 0; i < w * h; i++)
        if (labels[i] >= classes)
            return false;
    for (int y = 0; y < h; y++)
    {
        unsigned char* row = rgba + (std::size_t)y * stride;
        const std::uint8_t* lab = labels + (std::size_t)y * w;
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++)
            {
                const float v = (1.f - alpha) * row[4 * x + c] + alpha * palette_rgb[3 * lab[x] + c];
                row[4 * x + c] = (unsigned char)std::min(255.f, v + 0.5f);
            }
    }
    return true;
}

} // namespace litedet_demo

#endif // LITEDET_DEMO_DEMO_UTILS_H
