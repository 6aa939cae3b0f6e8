// Desktop checks of the Android demo's pure helpers (app/src/main/cpp/frame_utils.h,
// demo_utils.h) and of how litedet_ncnn.cpp uses the core's letterbox. They need
// neither Android nor ncnn: `bash host_tests/run.sh` builds and runs them with g++.
//
// What is NOT covered here: the JNI, camera, ncnn and OpenCV code, which needs the
// Android NDK and the prebuilt packages (see README.md).

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "demo_utils.h"
#include "frame_utils.h"
#include "litedet_letterbox.h"

using namespace litedet_demo;

static int g_passed = 0, g_failed = 0;
static bool g_current_ok = true;

#define CHECK(cond)                                                                      \
    do                                                                                   \
    {                                                                                    \
        if (!(cond))                                                                     \
        {                                                                                \
            std::printf("    CHECK failed at %s:%d: %s\n", __FILE__, __LINE__, #cond);   \
            g_current_ok = false;                                                        \
        }                                                                                \
    } while (0)

static void run(const char* name, const std::function<void()>& fn)
{
    g_current_ok = true;
    fn();
    std::printf("%s %s\n", g_current_ok ? "PASS" : "FAIL", name);
    (g_current_ok ? g_passed : g_failed)++;
}

// Reference: turn an image (w x h, one int per pixel) clockwise by 90 degrees.
static std::vector<int> rot90cw(const std::vector<int>& src, int w, int h)
{
    std::vector<int> dst((size_t)w * h);
    const int dw = h;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            dst[(size_t)x * dw + (h - 1 - y)] = src[(size_t)y * w + x];
    return dst;
}

static std::vector<int> reference_transform(const std::vector<int>& src, int w, int h, int rotation, bool mirror,
                                            int& ow, int& oh)
{
    std::vector<int> img = src;
    int cw = w, ch = h;
    for (int k = 0; k < rotation / 90; k++)
    {
        img = rot90cw(img, cw, ch);
        std::swap(cw, ch);
    }
    if (mirror)
    {
        std::vector<int> m(img.size());
        for (int y = 0; y < ch; y++)
            for (int x = 0; x < cw; x++)
                m[(size_t)y * cw + (cw - 1 - x)] = img[(size_t)y * cw + x];
        img = m;
    }
    ow = cw;
    oh = ch;
    return img;
}

// A YUV_420_888 test image in a given plane layout.
struct YuvImage
{
    int w, h;
    std::vector<std::uint8_t> y, u, v;  // full-resolution reference values
    std::vector<std::uint8_t> ybuf, ubuf, vbuf;
    Yuv420Planes planes{};

    // layout: 0 = I420 (pixel stride 1), 1 = NV21-like (interleaved, pixel stride 2),
    // with row padding to exercise the row strides
    YuvImage(int w_, int h_, int layout) : w(w_), h(h_)
    {
        const int cw = (w + 1) / 2, ch = (h + 1) / 2;
        y.resize((size_t)w * h);
        u.resize((size_t)cw * ch);
        v.resize((size_t)cw * ch);
        for (int j = 0; j < h; j++)
            for (int i = 0; i < w; i++)
                y[(size_t)j * w + i] = (std::uint8_t)((i * 37 + j * 11) % 256);
        for (int j = 0; j < ch; j++)
            for (int i = 0; i < cw; i++)
            {
                u[(size_t)j * cw + i] = (std::uint8_t)((i * 53 + j * 7 + 30) % 256);
                v[(size_t)j * cw + i] = (std::uint8_t)((i * 13 + j * 71 + 90) % 256);
            }
        const int y_row = w + 5;
        ybuf.assign((size_t)y_row * h, 0);
        for (int j = 0; j < h; j++)
            for (int i = 0; i < w; i++)
                ybuf[(size_t)j * y_row + i] = y[(size_t)j * w + i];
        planes.y = ybuf.data();
        planes.y_row_stride = y_row;
        planes.y_pixel_stride = 1;
        if (layout == 0)
        {
            const int row = cw + 3;
            ubuf.assign((size_t)row * ch, 0);
            vbuf.assign((size_t)row * ch, 0);
            for (int j = 0; j < ch; j++)
                for (int i = 0; i < cw; i++)
                {
                    ubuf[(size_t)j * row + i] = u[(size_t)j * cw + i];
                    vbuf[(size_t)j * row + i] = v[(size_t)j * cw + i];
                }
            planes.u = ubuf.data();
            planes.v = vbuf.data();
            planes.uv_row_stride = row;
            planes.uv_pixel_stride = 1;
        }
        else
        {
            // one interleaved V U V U ... buffer; U starts one byte after V (as NV21)
            const int row = cw * 2 + 4;
            vbuf.assign((size_t)row * ch + 1, 0);
            for (int j = 0; j < ch; j++)
                for (int i = 0; i < cw; i++)
                {
                    vbuf[(size_t)j * row + 2 * i] = v[(size_t)j * cw + i];
                    vbuf[(size_t)j * row + 2 * i + 1] = u[(size_t)j * cw + i];
                }
            planes.v = vbuf.data();
            planes.u = vbuf.data() + 1;
            planes.uv_row_stride = row;
            planes.uv_pixel_stride = 2;
        }
    }
};

static void float_yuv_to_rgb(int Y, int U, int V, double& r, double& g, double& b)
{
    r = Y + 1.402 * (V - 128);
    g = Y - 0.344136 * (U - 128) - 0.714136 * (V - 128);
    b = Y + 1.772 * (U - 128);
    r = r < 0 ? 0 : (r > 255 ? 255 : r);
    g = g < 0 ? 0 : (g > 255 ? 255 : g);
    b = b < 0 ? 0 : (b > 255 ? 255 : b);
}

int main()
{
    run("normalize_rotation", [] {
        CHECK(normalize_rotation(0) == 0);
        CHECK(normalize_rotation(90) == 90);
        CHECK(normalize_rotation(270) == 270);
        CHECK(normalize_rotation(360) == 0);
        CHECK(normalize_rotation(-90) == 270);
        CHECK(normalize_rotation(450) == 90);
        CHECK(normalize_rotation(100) == 90);
    });

    run("frame_rotation follows the camera2 sensor orientation", [] {
        // portrait phone (display 0): back and front turn by the sensor orientation
        CHECK(frame_rotation(90, false, 0) == 90);
        CHECK(frame_rotation(270, true, 0) == 270);
        CHECK(frame_rotation(0, false, 0) == 0);
        // a turned display: back subtracts, front adds (then mirrors)
        CHECK(frame_rotation(90, false, 90) == 0);
        CHECK(frame_rotation(270, true, 90) == 0);
        CHECK(frame_rotation(90, false, 270) == 180);
    });

    run("rotated_size", [] {
        CHECK(rotated_size(640, 480, 90).w == 480 && rotated_size(640, 480, 90).h == 640);
        CHECK(rotated_size(640, 480, 180).w == 640 && rotated_size(640, 480, 180).h == 480);
        CHECK(rotated_size(640, 480, 270).w == 480);
    });

    run("map_dst_to_src and source_walk equal a reference rotate + mirror", [] {
        const int w = 7, h = 4;
        std::vector<int> src((size_t)w * h);
        for (int i = 0; i < w * h; i++)
            src[(size_t)i] = i;
        for (int rotation : {0, 90, 180, 270})
            for (bool mirror : {false, true})
            {
                int ow = 0, oh = 0;
                const std::vector<int> ref = reference_transform(src, w, h, rotation, mirror, ow, oh);
                const Size2 s = rotated_size(w, h, rotation);
                CHECK(s.w == ow && s.h == oh);
                const SourceWalk wk = source_walk(w, h, rotation, mirror);
                bool all = true;
                for (int dy = 0; dy < oh; dy++)
                    for (int dx = 0; dx < ow; dx++)
                    {
                        int sx = -1, sy = -1;
                        map_dst_to_src(dx, dy, w, h, rotation, mirror, sx, sy);
                        const int ax = wk.sx0 + dx * wk.sx_dx + dy * wk.sx_dy;
                        const int ay = wk.sy0 + dx * wk.sy_dx + dy * wk.sy_dy;
                        all = all && sx >= 0 && sx < w && sy >= 0 && sy < h;
                        all = all && src[(size_t)sy * w + sx] == ref[(size_t)dy * ow + dx];
                        all = all && ax == sx && ay == sy;
                    }
                CHECK(all);
            }
    });

    run("front camera with sensor 270 is the transverse flip (as ncnn kanna type 7)", [] {
        // kanna_rotate type 7: dst(x, y) = src(sw-1-y, sh-1-x)
        const int w = 5, h = 3;
        bool all = true;
        for (int dy = 0; dy < w; dy++)
            for (int dx = 0; dx < h; dx++)
            {
                int sx = 0, sy = 0;
                map_dst_to_src(dx, dy, w, h, frame_rotation(270, true, 0), true, sx, sy);
                all = all && sx == w - 1 - dy && sy == h - 1 - dx;
            }
        CHECK(all);
    });

    run("yuv_to_rgb matches full-range BT.601 within 1", [] {
        double worst = 0.0;
        for (int Y = 0; Y < 256; Y += 5)
            for (int U = 0; U < 256; U += 5)
                for (int V = 0; V < 256; V += 5)
                {
                    std::uint8_t r, g, b;
                    yuv_to_rgb(Y, U, V, r, g, b);
                    double fr, fg, fb;
                    float_yuv_to_rgb(Y, U, V, fr, fg, fb);
                    worst = std::max(worst, std::fabs(r - fr));
                    worst = std::max(worst, std::fabs(g - fg));
                    worst = std::max(worst, std::fabs(b - fb));
                }
        CHECK(worst < 1.0);
        std::uint8_t r, g, b;
        yuv_to_rgb(128, 128, 128, r, g, b);
        CHECK(r == 128 && g == 128 && b == 128);
        yuv_to_rgb(255, 128, 128, r, g, b);
        CHECK(r == 255 && g == 255 && b == 255);
    });

    run("yuv420_to_rgba_rotated: planar and interleaved layouts, every rotation", [] {
        const int w = 10, h = 6;
        for (int layout : {0, 1})
        {
            YuvImage img(w, h, layout);
            // unrotated reference from the full-resolution values
            std::vector<int> ref_rgba((size_t)w * h);
            for (int j = 0; j < h; j++)
                for (int i = 0; i < w; i++)
                {
                    std::uint8_t r, g, b;
                    const int cw = (w + 1) / 2;
                    yuv_to_rgb(img.y[(size_t)j * w + i], img.u[(size_t)(j / 2) * cw + i / 2],
                               img.v[(size_t)(j / 2) * cw + i / 2], r, g, b);
                    ref_rgba[(size_t)j * w + i] = (r << 16) | (g << 8) | b;
                }
            for (int rotation : {0, 90, 180, 270})
                for (bool mirror : {false, true})
                {
                    int ow = 0, oh = 0;
                    const std::vector<int> ref = reference_transform(ref_rgba, w, h, rotation, mirror, ow, oh);
                    const int stride = ow * 4 + 8;  // padded rows
                    std::vector<std::uint8_t> out((size_t)stride * oh, 7);
                    yuv420_to_rgba_rotated(img.planes, w, h, rotation, mirror, out.data(), stride);
                    bool all = true;
                    for (int y = 0; y < oh; y++)
                        for (int x = 0; x < ow; x++)
                        {
                            const std::uint8_t* p = &out[(size_t)y * stride + (size_t)x * 4];
                            all = all && ((p[0] << 16) | (p[1] << 8) | p[2]) == ref[(size_t)y * ow + x] && p[3] == 255;
                        }
                    // the row padding is left alone
                    all = all && out[(size_t)ow * 4] == 7;
                    CHECK(all);
                }
        }
    });

    run("center_crop_to_aspect", [] {
        // 480x640 portrait frame on a 1080x1920 surface: cut the sides
        CropRect r = center_crop_to_aspect(480, 640, 1080, 1920);
        CHECK(r.w == 360 && r.h == 640 && r.x == 60 && r.y == 0);
        // on a square surface: cut top and bottom
        r = center_crop_to_aspect(480, 640, 1000, 1000);
        CHECK(r.w == 480 && r.h == 480 && r.x == 0 && r.y == 80);
        // same aspect: the whole frame
        r = center_crop_to_aspect(480, 640, 960, 1280);
        CHECK(r.x == 0 && r.y == 0 && r.w == 480 && r.h == 640);
        // surface size unknown yet
        r = center_crop_to_aspect(480, 640, 0, 0);
        CHECK(r.x == 0 && r.y == 0 && r.w == 480 && r.h == 640);
        // extreme aspect never gives an empty crop
        r = center_crop_to_aspect(480, 640, 100000, 1);
        CHECK(r.h >= 1 && r.w == 480);
    });

    run("model_names_from_asset_files", [] {
        const std::vector<std::string> files = {"nanodet_m.cfg", "README.txt", "nanodet_m.param", "nanodet_m.bin",
                                                "a-b_1.cfg", ".hidden.cfg", ".cfg", "sub/x.cfg", "nanodet_m.cfg",
                                                "y.cfg.bak", "Z.cfg"};
        const std::vector<std::string> names = model_names_from_asset_files(files);
        CHECK((names == std::vector<std::string>{"Z", "a-b_1", "nanodet_m"}));
        CHECK(model_names_from_asset_files({}).empty());
        CHECK(join(names, ", ") == "Z, a-b_1, nanodet_m");
    });

    run("jni_safe_utf8 keeps BMP text and replaces what NewStringUTF refuses", [] {
        CHECK(jni_safe_utf8("person") == "person");
        CHECK(jni_safe_utf8("caf\xc3\xa9 \xe7\x8c\xab") == "caf\xc3\xa9 \xe7\x8c\xab");  // 2- and 3-byte kept
        CHECK(jni_safe_utf8("a\xf0\x9f\x98\x80" "b") == "a?b");                           // 4-byte emoji
        CHECK(jni_safe_utf8(std::string("a\0b", 3)) == "a?b");                          // NUL
        CHECK(jni_safe_utf8("x\xffy\xc3") == "x?y?");                                  // invalid, truncated
        CHECK(jni_safe_utf8("\xe0\x80\x80") == "?");                                   // overlong
    });

    run("choose_stream_size", [] {
        std::vector<StreamSize> s = {{1920, 1080}, {1280, 960}, {640, 480}, {320, 240}};
        StreamSize c = choose_stream_size(s, 640, 480);
        CHECK(c.w == 640 && c.h == 480);
        s = {{1920, 1080}, {1280, 960}, {800, 600}, {320, 240}};
        c = choose_stream_size(s, 640, 480);
        CHECK(c.w == 800 && c.h == 600);  // smallest 4:3 that covers
        s = {{1920, 1080}, {1280, 720}, {320, 240}};
        c = choose_stream_size(s, 640, 480);
        CHECK(c.w == 1280 && c.h == 720);  // smallest that covers
        s = {{320, 240}, {176, 144}};
        c = choose_stream_size(s, 640, 480);
        CHECK(c.w == 320 && c.h == 240);  // largest
        c = choose_stream_size({}, 640, 480);
        CHECK(c.w == 640 && c.h == 480);
    });

    run("FpsMeter", [] {
        FpsMeter m(4);
        CHECK(m.fps() == 0.f);
        m.tick(1000.0);
        CHECK(m.fps() == 0.f);
        m.tick(1050.0);
        CHECK(std::fabs(m.fps() - 20.f) < 1e-3f);
        for (int i = 2; i <= 10; i++)
            m.tick(1000.0 + 50.0 + (i - 1) * 100.0);  // then 100 ms steps
        CHECK(std::fabs(m.fps() - 10.f) < 1e-3f);  // the window forgot the 50 ms step
        m.reset();
        CHECK(m.fps() == 0.f);
    });

    run("check_level_output accepts [rows, cols] fp32 and names what is wrong", [] {
        std::string err;
        int rows = 0;
        // 320x320 input, stride 8: 40*40 = 1600 rows
        CHECK(grid_rows(320, 320, 8) == 1600);
        CHECK(grid_rows(320, 224, 32) == 10 * 7);
        CHECK(grid_rows(330, 200, 32) == 11 * 7);  // ceil
        TensorShape ok{2, 80, 1600, 1, 1, 4, 1};
        CHECK(check_level_output(ok, "out0", "cls_blobs", 8, 80, "num_classes", 1600, rows, err) && rows == 1600);
        TensorShape ok3{3, 32, 1600, 1, 1, 4, 1};
        CHECK(check_level_output(ok3, "out3", "dis_blobs", 8, 32, "4*(reg_max+1)", 1600, rows, err));

        TensorShape cols{2, 81, 1600, 1, 1, 4, 1};
        CHECK(!check_level_output(cols, "out0", "cls_blobs", 8, 80, "num_classes", 1600, rows, err));
        CHECK(err.find("out0") != std::string::npos && err.find("81") != std::string::npos
              && err.find("num_classes") != std::string::npos);

        TensorShape fp16{2, 80, 1600, 1, 1, 2, 1};
        CHECK(!check_level_output(fp16, "out1", "cls_blobs", 16, 80, "num_classes", 1600, rows, err));
        CHECK(err.find("elemsize 2") != std::string::npos);

        TensorShape chw{3, 40, 40, 1, 80, 4, 1};
        CHECK(!check_level_output(chw, "out2", "cls_blobs", 32, 80, "num_classes", 1600, rows, err));
        CHECK(err.find("dims=3") != std::string::npos);

        TensorShape wrong_rows{2, 80, 1599, 1, 1, 4, 1};
        CHECK(!check_level_output(wrong_rows, "out0", "cls_blobs", 8, 80, "num_classes", 1600, rows, err));
        CHECK(err.find("1599") != std::string::npos);

        TensorShape empty{0, 0, 0, 0, 0, 0, 0};
        CHECK(!check_level_output(empty, "out0", "cls_blobs", 8, 80, "num_classes", 1600, rows, err));
    });

    run("label_color gives distinct colours to neighbouring classes", [] {
        std::vector<int> seen;
        bool distinct = true;
        for (int l = 0; l < 12; l++)
        {
            std::uint8_t r, g, b;
            label_color(l, r, g, b);
            const int c = (r << 16) | (g << 8) | b;
            for (int s : seen)
                distinct = distinct && s != c;
            seen.push_back(c);
        }
        CHECK(distinct);
    });

    run("letterbox padding as litedet_ncnn.cpp computes it is never negative and fills the input", [] {
        // the same arithmetic as NcnnDetector::detect: bottom/right are what is left
        const int sizes[][2] = {{640, 480}, {480, 640}, {360, 640}, {1, 1}, {1920, 1}, {5, 3000}, {320, 320}, {333, 777}};
        bool all = true;
        for (bool fixed : {false, true})
            for (const auto& s : sizes)
            {
                const litedet::Letterbox lb = litedet::letterbox_geometry(s[0], s[1], 320, 32, fixed);
                const int pad_bottom = lb.in_h - lb.resized_h - lb.pad_top;
                const int pad_right = lb.in_w - lb.resized_w - lb.pad_left;
                all = all && lb.pad_top >= 0 && lb.pad_left >= 0 && pad_bottom >= 0 && pad_right >= 0;
                all = all && lb.resized_w >= 1 && lb.resized_h >= 1;
                all = all && lb.in_w % 32 == 0 && lb.in_h % 32 == 0;
                all = all && (!fixed || (lb.in_w == 320 && lb.in_h == 320));
                // centred: the two sides differ by at most one pixel
                all = all && pad_bottom - lb.pad_top >= 0 && pad_bottom - lb.pad_top <= 1;
                all = all && pad_right - lb.pad_left >= 0 && pad_right - lb.pad_left <= 1;
            }
        CHECK(all);
    });

    run("blend_mask blends each pixel with its class colour and refuses what does not fit", [] {
        // 2 x 1 RGBA frame, stride 12 (padding bytes must stay), classes 0 (red) and 1 (blue)
        unsigned char px[12] = {100, 100, 100, 7, 0, 0, 0, 9, 42, 42, 42, 42};
        const std::uint8_t labels[2] = {0, 1};
        const std::vector<std::uint8_t> palette = {255, 0, 0, 0, 0, 255};
        CHECK(blend_mask(px, 2, 1, 12, labels, 2, 1, palette, 0.5f));
        CHECK(px[0] == 178 && px[1] == 50 && px[2] == 50 && px[3] == 7);  // (100 + 255) / 2 rounded, alpha kept
        CHECK(px[4] == 0 && px[5] == 0 && px[6] == 128 && px[7] == 9);
        CHECK(px[8] == 42 && px[11] == 42);  // beyond the row: untouched
        const std::uint8_t bad[2] = {0, 2};  // class 2 has no colour
        CHECK(!blend_mask(px, 2, 1, 12, bad, 2, 1, palette, 0.5f));
        CHECK(!blend_mask(px, 2, 1, 12, labels, 1, 2, palette, 0.5f));  // another size
    });

    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
