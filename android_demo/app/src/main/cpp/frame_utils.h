// litedet Android demo: camera frame maths that needs neither Android nor ncnn.
//
// Plain C++17, header only, so host_tests/ compiles and checks it with g++ on
// a desktop. ndkcamera.cpp uses it to turn a YUV_420_888 camera image into an
// upright RGBA frame, litedet_jni.cpp to crop that frame to the screen.
//
// Rotation convention: `rotation` is the clockwise angle (0, 90, 180, 270) the
// sensor image is turned by; `mirror` then flips the turned image left-right
// (front camera, so the preview behaves like a mirror).

#ifndef LITEDET_DEMO_FRAME_UTILS_H
#define LITEDET_DEMO_FRAME_UTILS_H

#include <cstddef>
#include <cstdint>

namespace litedet_demo {

// Any angle in degrees -> 0, 90, 180 or 270 (rounded to the nearest quarter turn).
inline int normalize_rotation(int degrees)
{
    int d = degrees % 360;
    if (d < 0) d += 360;
    return ((d + 45) / 90 % 4) * 90;
}

// The clockwise rotation that makes a sensor image upright on screen.
// sensor_orientation: ACAMERA_SENSOR_ORIENTATION (0/90/180/270);
// display_rotation: how far the display is turned from its natural
// orientation (0 for the portrait-locked activity of this demo).
// For the front camera the image is mirrored after this rotation.
inline int frame_rotation(int sensor_orientation, bool front_facing, int display_rotation)
{
    const int s = normalize_rotation(sensor_orientation);
    const int d = normalize_rotation(display_rotation);
    return front_facing ? (s + d) % 360 : (s - d + 360) % 360;
}

struct Size2
{
    int w;
    int h;
};

inline Size2 rotated_size(int w, int h, int rotation)
{
    const int r = normalize_rotation(rotation);
    return (r == 90 || r == 270) ? Size2{h, w} : Size2{w, h};
}

// Destination pixel (dx, dy) of the turned (and optionally mirrored) image ->
// the source pixel (sx, sy) it comes from. sw x sh is the source size.
inline void map_dst_to_src(int dx, int dy, int sw, int sh, int rotation, bool mirror, int& sx, int& sy)
{
    const int r = normalize_rotation(rotation);
    const Size2 d = rotated_size(sw, sh, r);
    const int x = mirror ? d.w - 1 - dx : dx;
    switch (r)
    {
    case 90:
        sx = dy;
        sy = sh - 1 - x;
        break;
    case 180:
        sx = sw - 1 - x;
        sy = sh - 1 - dy;
        break;
    case 270:
        sx = sw - 1 - dy;
        sy = x;
        break;
    default:
        sx = x;
        sy = dy;
        break;
    }
}

// The same mapping written as an affine function of (dx, dy), so a row can
// be walked with two additions per pixel:
//   sx = sx0 + dx * sx_dx + dy * sx_dy,  sy = sy0 + dx * sy_dx + dy * sy_dy
struct SourceWalk
{
    int sx0, sx_dx, sx_dy;
    int sy0, sy_dx, sy_dy;
};

inline SourceWalk source_walk(int sw, int sh, int rotation, bool mirror)
{
    int x00 = 0, y00 = 0, x10 = 0, y10 = 0, x01 = 0, y01 = 0;
    map_dst_to_src(0, 0, sw, sh, rotation, mirror, x00, y00);
    map_dst_to_src(1, 0, sw, sh, rotation, mirror, x10, y10);
    map_dst_to_src(0, 1, sw, sh, rotation, mirror, x01, y01);
    return SourceWalk{x00, x10 - x00, x01 - x00, y00, y10 - y00, y01 - y00};
}

// One YUV_420_888 image as the NDK hands it over: three planes, each with its
// own row stride; U and V share row and pixel strides (the format guarantees it).
struct Yuv420Planes
{
    const std::uint8_t* y;
    const std::uint8_t* u;
    const std::uint8_t* v;
    int y_row_stride;
    int y_pixel_stride;
    int uv_row_stride;
    int uv_pixel_stride;
};

inline std::uint8_t clamp_u8(int v)
{
    return (std::uint8_t)(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// round(x / 256) for |x| < 65536, without relying on how ">>" or "/" treat
// negative numbers (shift to positive, floor-divide, shift back).
inline int round_div256(int x)
{
    return (x + 128 + 65536) / 256 - 256;
}

// Full-range BT.601 (JFIF, what camera YUV_420_888 uses), 8-bit fixed point:
// 359/256 = 1.402, 88/256 = 0.344, 183/256 = 0.714, 454/256 = 1.772.
inline void yuv_to_rgb(int y, int u, int v, std::uint8_t& r, std::uint8_t& g, std::uint8_t& b)
{
    const int du = u - 128;
    const int dv = v - 128;
    r = clamp_u8(y + round_div256(359 * dv));
    g = clamp_u8(y - round_div256(88 * du + 183 * dv));
    b = clamp_u8(y + round_div256(454 * du));
}

// Convert a sw x sh YUV_420_888 image into an upright RGBA image (alpha 255)
// of rotated_size(sw, sh, rotation), in one pass. dst_stride is in bytes.
inline void yuv420_to_rgba_rotated(const Yuv420Planes& p, int sw, int sh, int rotation, bool mirror,
                                   std::uint8_t* dst, int dst_stride)
{
    const Size2 d = rotated_size(sw, sh, rotation);
    const SourceWalk wk = source_walk(sw, sh, rotation, mirror);
    for (int dy = 0; dy < d.h; dy++)
    {
        std::uint8_t* out = dst + (std::ptrdiff_t)dy * dst_stride;
        int sx = wk.sx0 + dy * wk.sx_dy;
        int sy = wk.sy0 + dy * wk.sy_dy;
        for (int dx = 0; dx < d.w; dx++)
        {
            const int Y = p.y[(std::ptrdiff_t)sy * p.y_row_stride + (std::ptrdiff_t)sx * p.y_pixel_stride];
            const std::ptrdiff_t c = (std::ptrdiff_t)(sy >> 1) * p.uv_row_stride + (std::ptrdiff_t)(sx >> 1) * p.uv_pixel_stride;
            yuv_to_rgb(Y, p.u[c], p.v[c], out[0], out[1], out[2]);
            out[3] = 255;
            out += 4;
            sx += wk.sx_dx;
            sy += wk.sy_dx;
        }
    }
}

struct CropRect
{
    int x, y, w, h;
};

// The largest centred rectangle of a w x h frame with the aspect ratio of
// target_w x target_h (the preview surface): what the user sees, and so what
// the detector runs on. A non-positive target keeps the whole frame.
inline CropRect center_crop_to_aspect(int w, int h, int target_w, int target_h)
{
    if (w <= 0 || h <= 0 || target_w <= 0 || target_h <= 0)
        return CropRect{0, 0, w > 0 ? w : 0, h > 0 ? h : 0};
    CropRect r{0, 0, w, h};
    if ((long long)target_w * h > (long long)target_h * w)
    {
        // target is wider than the frame: keep the width, cut rows
        r.h = (int)((long long)w * target_h / target_w);
        if (r.h < 1) r.h = 1;
        r.y = (h - r.h) / 2;
    }
    else
    {
        r.w = (int)((long long)h * target_w / target_h);
        if (r.w < 1) r.w = 1;
        r.x = (w - r.w) / 2;
    }
    return r;
}

} // namespace litedet_demo

#endif // LITEDET_DEMO_FRAME_UTILS_H
