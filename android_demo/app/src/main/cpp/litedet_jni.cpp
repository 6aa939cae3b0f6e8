// litedet Android demo: JNI bridge, ncnn inference and drawing.
//
// Java side: com.litedet.demo.LiteDetNcnn (every native method there has its
// function at the bottom of this file). Frames come from NdkCamera (upright
// RGBA), are cropped to the preview's aspect ratio, run through the model and
// drawn, then copied into the SurfaceView's ANativeWindow.
//
// Every model constant comes from NAME.cfg in the assets (parsed by the reader
// of the kind its kind= names, through ModelRunner): blob names, input size,
// letterbox policy, pixel order, mean/norm, the kind's decoding settings, class
// names. The models are found by listing the assets for *.cfg. Preprocessing, inference and
// postprocessing are in litedet_ncnn.cpp (no Android there, so it is also
// checked on a desktop against the Python runtime).

#include <android/asset_manager.h>
#include <android/asset_manager_jni.h>
#include <android/log.h>
#include <android/native_window.h>
#include <android/native_window_jni.h>
#include <jni.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

// ncnn (the prebuilt package's include/ncnn is on the include path)
#include "benchmark.h"
#include "cpu.h"
#include "gpu.h"
#include "mat.h"
#include "net.h"

#include <opencv2/core/core.hpp>
#include <opencv2/imgproc/imgproc.hpp>

#include "demo_utils.h"
#include "frame_utils.h"
#include "litedet_ncnn.h"
#include "litedet_letterbox.h"
#include "ndkcamera.h"

#define LOG_TAG "litedet"
#define LOGI(...) __android_log_print(ANDROID_LOG_INFO, LOG_TAG, __VA_ARGS__)
#define LOGW(...) __android_log_print(ANDROID_LOG_WARN, LOG_TAG, __VA_ARGS__)
#define LOGE(...) __android_log_print(ANDROID_LOG_ERROR, LOG_TAG, __VA_ARGS__)

namespace {

// ---------------------------------------------------------------------------
// assets

std::vector<std::string> list_asset_files(AAssetManager* mgr)
{
    std::vector<std::string> files;
    AAssetDir* dir = AAssetManager_openDir(mgr, "");  // the assets root; files only
    if (!dir)
        return files;
    while (const char* name = AAssetDir_getNextFileName(dir))
        files.emplace_back(name);
    AAssetDir_close(dir);
    return files;
}

bool asset_exists(AAssetManager* mgr, const std::string& name)
{
    AAsset* a = AAssetManager_open(mgr, name.c_str(), AASSET_MODE_UNKNOWN);
    if (!a)
        return false;
    AAsset_close(a);
    return true;
}

bool read_asset_text(AAssetManager* mgr, const std::string& name, std::string& out)
{
    AAsset* a = AAssetManager_open(mgr, name.c_str(), AASSET_MODE_BUFFER);
    if (!a)
        return false;
    const off64_t len = AAsset_getLength64(a);
    out.assign(len > 0 ? (size_t)len : 0, '\0');
    size_t got = 0;
    while (got < out.size())
    {
        const int n = AAsset_read(a, &out[got], out.size() - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    AAsset_close(a);
    out.resize(got);
    return got == (size_t)(len > 0 ? len : 0);
}

// ---------------------------------------------------------------------------
// the model

class LiteDetModel
{
public:
    // Load NAME.cfg, then the param/bin it names, from the assets.
    bool load(AAssetManager* mgr, const std::string& name, bool use_gpu, std::string& err)
    {
        name_ = name;
        use_gpu_ = use_gpu;

        const std::string cfg_name = name + ".cfg";
        std::string text;
        if (!read_asset_text(mgr, cfg_name, text))
        {
            err = "cannot read asset " + cfg_name;
            return false;
        }
        if (!det_.set_config(text, cfg_name, err))
            return false;
        for (int i = 0; i < det_.graph_count(); i++)  // stage 1, and the head of a two-stage model
            for (const std::string* f : {&det_.graph_param(i), &det_.graph_bin(i)})
                if (!asset_exists(mgr, *f))
                {
                    err = cfg_name + " names " + *f + ", which is not in the assets";
                    return false;
                }

        // one thread per big core (the camera thread binds its OpenMP threads
        // to the big cores: see DemoCamera::on_frame)
        if (!det_.set_options(use_gpu, ncnn::get_big_cpu_count(), err))
            return false;

        for (int i = 0; i < det_.graph_count(); i++)
        {
            const std::string& param = det_.graph_param(i);
            const std::string& bin = det_.graph_bin(i);
            if (det_.net(i).load_param(mgr, param.c_str()) != 0)
            {
                err = "ncnn could not parse " + param
                      + " (written by a newer ncnn than this package? the bundles need ncnn 20261020 or newer)";
                return false;
            }
            if (det_.net(i).load_model(mgr, bin.c_str()) != 0)
            {
                err = "ncnn could not load the weights " + bin + " (truncated, or not the bin for " + param + ")";
                return false;
            }
        }
        if (!det_.check_blobs(err))
            return false;

        LOGI("loaded %s: %s (%s, %s), %d graph(s), %d classes, %s, %d threads", name.c_str(),
             det_.architecture().c_str(), det_.kind_name().c_str(), det_.precision().c_str(), det_.graph_count(),
             (int)det_.class_names().size(), use_gpu ? "GPU" : "CPU", det_.num_threads());
        return true;
    }

    // RGBA image -> the kind's results in its pixels (detections, or a segmentation mask).
    bool detect(const cv::Mat& rgba, litedet_demo::Results& results, std::string& err)
    {
        if (rgba.empty() || rgba.type() != CV_8UC4)
        {
            err = "internal: the frame is not an RGBA image";
            return false;
        }
        return det_.run(rgba.data, rgba.cols, rgba.rows, (int)rgba.step[0], results, err);
    }

    // A segmentation kind's mask, blended into the frame in its palette (from the config).
    void draw_mask(cv::Mat& rgba, const litedet::LabelMask& m) const
    {
        if (!m.empty())
            litedet_demo::blend_mask(rgba.data, rgba.cols, rgba.rows, (int)rgba.step[0], m.labels.data(), m.width,
                                     m.height, m.palette_rgb, 0.5f);
    }

    void draw(cv::Mat& rgba, const std::vector<litedet::Detection>& dets) const
    {
        const std::vector<std::string>& names = det_.class_names();
        const double font_scale = 0.5;
        const int thickness = 1;
        for (const litedet::Detection& d : dets)
        {
            std::uint8_t r = 0, g = 0, b = 0;
            litedet_demo::label_color(d.label, r, g, b);
            const cv::Scalar color(r, g, b, 255);  // the Mat is RGBA

            const cv::Point p1(cvRound(d.x1), cvRound(d.y1));
            const cv::Point p2(cvRound(d.x2), cvRound(d.y2));
            cv::rectangle(rgba, p1, p2, color, 2);

            const std::string cname = (d.label >= 0 && d.label < (int)names.size()) ? names[d.label]
                                                                                    : "class " + std::to_string(d.label);
            char text[256];
            std::snprintf(text, sizeof(text), "%s %.0f%%", cname.c_str(), d.score * 100.f);

            int baseline = 0;
            const cv::Size ts = cv::getTextSize(text, cv::FONT_HERSHEY_SIMPLEX, font_scale, thickness, &baseline);
            int x = p1.x;
            int y = p1.y - ts.height - baseline;
            if (y < 0)
                y = 0;
            if (x + ts.width > rgba.cols)
                x = rgba.cols - ts.width;
            if (x < 0)
                x = 0;
            cv::rectangle(rgba, cv::Rect(cv::Point(x, y), cv::Size(ts.width, ts.height + baseline)), color, -1);
            const bool dark_text = (r * 299 + g * 587 + b * 114) > 128000;
            cv::putText(rgba, text, cv::Point(x, y + ts.height), cv::FONT_HERSHEY_SIMPLEX, font_scale,
                        dark_text ? cv::Scalar(0, 0, 0, 255) : cv::Scalar(255, 255, 255, 255), thickness);
        }
    }

    const std::string& name() const { return name_; }
    bool use_gpu() const { return use_gpu_; }

private:
    std::string name_;
    bool use_gpu_ = false;
    litedet_demo::ModelRunner det_;
};

// ---------------------------------------------------------------------------
// overlays

void draw_banner(cv::Mat& rgba, const std::string& text, int row)
{
    const double font_scale = 0.5;
    int baseline = 0;
    const cv::Size ts = cv::getTextSize(text, cv::FONT_HERSHEY_SIMPLEX, font_scale, 1, &baseline);
    const int line_h = ts.height + baseline + 4;
    const int y = row * line_h;
    cv::rectangle(rgba, cv::Rect(0, y, std::min(ts.width + 8, rgba.cols), line_h), cv::Scalar(0, 0, 0, 255), -1);
    cv::putText(rgba, text, cv::Point(4, y + ts.height + 2), cv::FONT_HERSHEY_SIMPLEX, font_scale,
                cv::Scalar(255, 255, 255, 255), 1);
}

// A long message broken into lines that fit the frame width.
void draw_message(cv::Mat& rgba, const std::string& msg, int first_row)
{
    const double font_scale = 0.5;
    int row = first_row;
    std::string line;
    size_t i = 0;
    while (i < msg.size())
    {
        size_t j = msg.find(' ', i);
        if (j == std::string::npos)
            j = msg.size();
        const std::string word = msg.substr(i, j - i);
        const std::string trial = line.empty() ? word : line + " " + word;
        int baseline = 0;
        if (!line.empty() && cv::getTextSize(trial, cv::FONT_HERSHEY_SIMPLEX, font_scale, 1, &baseline).width + 8 > rgba.cols)
        {
            draw_banner(rgba, line, row++);
            line = word;
        }
        else
        {
            line = trial;
        }
        i = j + 1;
    }
    if (!line.empty())
        draw_banner(rgba, line, row);
}

void draw_fps(cv::Mat& rgba, float fps, const std::string& info)
{
    char text[160];
    std::snprintf(text, sizeof(text), "%s  FPS=%.1f", info.c_str(), fps);
    const double font_scale = 0.5;
    int baseline = 0;
    const cv::Size ts = cv::getTextSize(text, cv::FONT_HERSHEY_SIMPLEX, font_scale, 1, &baseline);
    const int x = std::max(0, rgba.cols - ts.width - 4);
    const int y = std::max(0, rgba.rows - ts.height - baseline - 4);
    cv::rectangle(rgba, cv::Rect(x, y, std::min(ts.width + 4, rgba.cols), ts.height + baseline + 4),
                  cv::Scalar(255, 255, 255, 255), -1);
    cv::putText(rgba, text, cv::Point(x + 2, y + ts.height + 2), cv::FONT_HERSHEY_SIMPLEX, font_scale,
                cv::Scalar(0, 0, 0, 255), 1);
}

// ---------------------------------------------------------------------------
// state shared between the UI thread, the model-loading thread and the camera thread

std::mutex g_model_lock;                   // guards g_model and g_status
std::unique_ptr<LiteDetModel> g_model;     // the model frames run through
std::string g_status = "no model loaded";  // shown on the preview while g_model is null

std::mutex g_error_lock;
std::string g_last_error;

void set_last_error(const std::string& e)
{
    std::lock_guard<std::mutex> g(g_error_lock);
    g_last_error = e;
}

class DemoCamera : public NdkCamera
{
public:
    ~DemoCamera() override
    {
        close();
        set_window(nullptr);
    }

    // Takes over one reference of `win` (may be null).
    void set_window(ANativeWindow* win)
    {
        int tw = 0, th = 0;
        if (win)
        {
            // forget a buffer size set for an earlier frame, so that the size
            // read back is the surface's own (what the SurfaceView shows)
            ANativeWindow_setBuffersGeometry(win, 0, 0, WINDOW_FORMAT_RGBA_8888);
            tw = ANativeWindow_getWidth(win);
            th = ANativeWindow_getHeight(win);
        }
        ANativeWindow* old = nullptr;
        {
            std::lock_guard<std::mutex> g(win_lock_);
            old = win_;
            win_ = win;
            target_w_ = tw;
            target_h_ = th;
        }
        if (old)
            ANativeWindow_release(old);
    }

    void on_frame(const unsigned char* rgba, int w, int h, int stride) override
    {
        ANativeWindow* win = nullptr;
        int target_w = 0, target_h = 0;
        {
            std::lock_guard<std::mutex> g(win_lock_);
            win = win_;
            target_w = target_w_;
            target_h = target_h_;
            if (win)
                ANativeWindow_acquire(win);  // so a concurrent set_window() cannot free it under us
        }
        if (!win)
            return;

        // what the user sees: the frame cropped to the surface's aspect ratio
        const litedet_demo::CropRect crop = litedet_demo::center_crop_to_aspect(w, h, target_w, target_h);
        const cv::Mat frame(h, w, CV_8UC4, const_cast<unsigned char*>(rgba), (size_t)stride);
        cv::Mat view = frame(cv::Rect(crop.x, crop.y, crop.w, crop.h)).clone();

        // ncnn binds the OpenMP threads of the calling thread, so the big-core
        // binding is done here, on the thread that runs inference
        static thread_local bool big_cores_bound = false;
        if (!big_cores_bound)
        {
            ncnn::set_cpu_powersave(2);
            big_cores_bound = true;
        }

        const std::string info = run_model(view);
        fps_.tick(ncnn::get_current_time());
        draw_fps(view, fps_.fps(), info);

        blit(win, view);
        ANativeWindow_release(win);
    }

private:
    // The loaded model on one frame, its detections drawn into it; "" or the line to show.
    static std::string run_model(cv::Mat& view)
    {
        std::string info;
        std::lock_guard<std::mutex> g(g_model_lock);
        if (g_model)
        {
            litedet_demo::Results results;
            std::string err;
            const double t0 = ncnn::get_current_time();
            if (g_model->detect(view, results, err))
            {
                const double t1 = ncnn::get_current_time();
                g_model->draw_mask(view, results.mask);
                g_model->draw(view, results.detections);
                char buf[96];
                std::snprintf(buf, sizeof(buf), "%s %s %.0fms", g_model->name().c_str(),
                              g_model->use_gpu() ? "GPU" : "CPU", t1 - t0);
                info = buf;
            }
            else
            {
                // a model that fails on frames is unloaded, with its reason on screen
                LOGE("%s: %s", g_model->name().c_str(), err.c_str());
                g_status = g_model->name() + ": " + err;
                set_last_error(g_status);
                g_model.reset();
            }
        }
        if (!g_model)
            draw_message(view, g_status, 0);
        return info;
    }

    static void blit(ANativeWindow* win, const cv::Mat& rgba)
    {
        if (ANativeWindow_setBuffersGeometry(win, rgba.cols, rgba.rows, WINDOW_FORMAT_RGBA_8888) != 0)
            return;
        ANativeWindow_Buffer buf;
        if (ANativeWindow_lock(win, &buf, nullptr) != 0)
            return;  // the surface is going away
        if (buf.format == WINDOW_FORMAT_RGBA_8888 || buf.format == WINDOW_FORMAT_RGBX_8888)
        {
            const int rows = std::min(buf.height, rgba.rows);
            const size_t bytes = (size_t)std::min(buf.width, rgba.cols) * 4;
            for (int y = 0; y < rows; y++)
            {
                unsigned char* dst = (unsigned char*)buf.bits + (size_t)buf.stride * 4 * y;
                std::memcpy(dst, rgba.ptr<unsigned char>(y), bytes);
            }
        }
        ANativeWindow_unlockAndPost(win);
    }

    std::mutex win_lock_;
    ANativeWindow* win_ = nullptr;  // guarded by win_lock_, with the surface size below
    int target_w_ = 0;
    int target_h_ = 0;
    litedet_demo::FpsMeter fps_{10};  // camera thread only
};

DemoCamera* g_camera = nullptr;

std::string jstring_to_std(JNIEnv* env, jstring s)
{
    if (!s)
        return std::string();
    const char* c = env->GetStringUTFChars(s, nullptr);
    if (!c)
        return std::string();
    std::string out(c);
    env->ReleaseStringUTFChars(s, c);
    return out;
}

} // namespace

// ---------------------------------------------------------------------------
// JNI: com.litedet.demo.LiteDetNcnn

extern "C" {

JNIEXPORT jint JNI_OnLoad(JavaVM* /*vm*/, void* /*reserved*/)
{
    LOGI("JNI_OnLoad");
#if NCNN_VULKAN
    ncnn::create_gpu_instance();  // returns non-zero (and GPU stays unavailable) on a device without Vulkan
#endif
    g_camera = new DemoCamera;
    return JNI_VERSION_1_6;
}

JNIEXPORT void JNI_OnUnload(JavaVM* /*vm*/, void* /*reserved*/)
{
    LOGI("JNI_OnUnload");
    delete g_camera;  // closes the camera: no frame runs after this
    g_camera = nullptr;
    {
        std::lock_guard<std::mutex> g(g_model_lock);
        g_model.reset();
    }
#if NCNN_VULKAN
    ncnn::destroy_gpu_instance();  // after every GPU net is gone
#endif
}

// public native String[] listModels(AssetManager mgr);
JNIEXPORT jobjectArray JNICALL Java_com_litedet_demo_LiteDetNcnn_listModels(JNIEnv* env, jobject /*thiz*/,
                                                                             jobject assetManager)
{
    std::vector<std::string> names;
    AAssetManager* mgr = assetManager ? AAssetManager_fromJava(env, assetManager) : nullptr;
    if (mgr)
        names = litedet_demo::model_names_from_asset_files(list_asset_files(mgr));
    LOGI("listModels: %d model(s): %s", (int)names.size(), litedet_demo::join(names, ", ").c_str());
    if (names.empty())
    {
        std::lock_guard<std::mutex> g(g_model_lock);
        if (!g_model)
            g_status = "no model in the app's assets: run litedet android push BUNDLE --demo android_demo --name NAME, "
                       "then rebuild the APK";
    }

    jclass string_class = env->FindClass("java/lang/String");
    if (!string_class)
        return nullptr;  // exception pending
    jobjectArray arr = env->NewObjectArray((jsize)names.size(), string_class, nullptr);
    if (!arr)
        return nullptr;
    for (size_t i = 0; i < names.size(); i++)
    {
        jstring s = env->NewStringUTF(litedet_demo::jni_safe_utf8(names[i]).c_str());
        if (!s)
            return nullptr;
        env->SetObjectArrayElement(arr, (jsize)i, s);
        env->DeleteLocalRef(s);
    }
    return arr;
}

// public native boolean loadModel(AssetManager mgr, String name, int cpugpu);
JNIEXPORT jboolean JNICALL Java_com_litedet_demo_LiteDetNcnn_loadModel(JNIEnv* env, jobject /*thiz*/, jobject assetManager,
                                                                        jstring name, jint cpugpu)
{
    const std::string model_name = jstring_to_std(env, name);
    AAssetManager* mgr = assetManager ? AAssetManager_fromJava(env, assetManager) : nullptr;
    std::string err;
    if (!mgr)
        err = "no AssetManager";
    else if (model_name.empty())
        err = "no model name";
    else if (cpugpu != 0 && cpugpu != 1)
        err = "cpugpu must be 0 (CPU) or 1 (GPU), got " + std::to_string(cpugpu);

    // build the new model without the lock, so frames keep flowing meanwhile
    std::unique_ptr<LiteDetModel> model;
    if (err.empty())
    {
        model.reset(new LiteDetModel);
        if (!model->load(mgr, model_name, cpugpu == 1, err))
            model.reset();
    }

    std::unique_ptr<LiteDetModel> old;
    {
        std::lock_guard<std::mutex> g(g_model_lock);
        old = std::move(g_model);
        g_model = std::move(model);
        g_status = err.empty() ? std::string() : model_name + ": " + err;
    }
    old.reset();  // outside the lock

    if (!err.empty())
    {
        LOGE("loadModel %s: %s", model_name.c_str(), err.c_str());
        set_last_error(model_name + ": " + err);
        return JNI_FALSE;
    }
    set_last_error(std::string());
    return JNI_TRUE;
}

// public native String getLastError();
JNIEXPORT jstring JNICALL Java_com_litedet_demo_LiteDetNcnn_getLastError(JNIEnv* env, jobject /*thiz*/)
{
    std::string e;
    {
        std::lock_guard<std::mutex> g(g_error_lock);
        e = g_last_error;
    }
    if (e.empty() && g_camera)
        e = g_camera->last_error();
    return env->NewStringUTF(litedet_demo::jni_safe_utf8(e).c_str());
}

// public native int getGpuCount();
JNIEXPORT jint JNICALL Java_com_litedet_demo_LiteDetNcnn_getGpuCount(JNIEnv* /*env*/, jobject /*thiz*/)
{
#if NCNN_VULKAN
    return (jint)ncnn::get_gpu_count();
#else
    return 0;
#endif
}

// public native boolean openCamera(int facing);
JNIEXPORT jboolean JNICALL Java_com_litedet_demo_LiteDetNcnn_openCamera(JNIEnv* /*env*/, jobject /*thiz*/, jint facing)
{
    if (!g_camera)
        return JNI_FALSE;
    if (g_camera->open((int)facing) != 0)
    {
        set_last_error(g_camera->last_error());
        return JNI_FALSE;
    }
    return JNI_TRUE;
}

// public native boolean closeCamera();
JNIEXPORT jboolean JNICALL Java_com_litedet_demo_LiteDetNcnn_closeCamera(JNIEnv* /*env*/, jobject /*thiz*/)
{
    if (!g_camera)
        return JNI_FALSE;
    g_camera->close();
    return JNI_TRUE;
}

// public native boolean setOutputWindow(Surface surface);
JNIEXPORT jboolean JNICALL Java_com_litedet_demo_LiteDetNcnn_setOutputWindow(JNIEnv* env, jobject /*thiz*/, jobject surface)
{
    if (!g_camera)
        return JNI_FALSE;
    // ANativeWindow_fromSurface returns a reference that set_window takes over
    ANativeWindow* win = surface ? ANativeWindow_fromSurface(env, surface) : nullptr;
    g_camera->set_window(win);
    return (surface == nullptr || win != nullptr) ? JNI_TRUE : JNI_FALSE;
}

} // extern "C"
