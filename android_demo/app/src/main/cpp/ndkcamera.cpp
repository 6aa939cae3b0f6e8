// litedet Android demo: NDK camera2 preview -> upright RGBA frames.
//
// Locking: lock_ guards the camera objects and is held by open()/close() on
// the UI thread. The NDK callbacks never take it: the image reader's thread
// takes only frame_lock_ (and reads atomics), the device callbacks only
// err_lock_. So ACameraDevice_close / AImageReader_delete, which wait for
// their callback threads, cannot deadlock against a callback waiting for
// lock_. Order where two are held: lock_ -> frame_lock_, lock_ -> err_lock_.

#include "ndkcamera.h"

#include <android/log.h>
#include <android/native_window.h>

#include "demo_utils.h"
#include "frame_utils.h"

#define LOG_TAG "litedet.camera"
#define LOGI(...) __android_log_print(ANDROID_LOG_INFO, LOG_TAG, __VA_ARGS__)
#define LOGW(...) __android_log_print(ANDROID_LOG_WARN, LOG_TAG, __VA_ARGS__)
#define LOGE(...) __android_log_print(ANDROID_LOG_ERROR, LOG_TAG, __VA_ARGS__)

namespace {

void on_device_disconnected(void* context, ACameraDevice* /*device*/)
{
    static_cast<NdkCamera*>(context)->handle_device_error("camera disconnected (another app took it?)", 0);
}

void on_device_error(void* context, ACameraDevice* /*device*/, int error)
{
    static_cast<NdkCamera*>(context)->handle_device_error("camera device error", error);
}

void on_session_closed(void* /*context*/, ACameraCaptureSession* session)
{
    LOGI("session %p closed", (void*)session);
}

void on_session_ready(void* /*context*/, ACameraCaptureSession* session)
{
    LOGI("session %p ready", (void*)session);
}

void on_session_active(void* /*context*/, ACameraCaptureSession* session)
{
    LOGI("session %p active", (void*)session);
}

void on_image_available(void* context, AImageReader* reader)
{
    static_cast<NdkCamera*>(context)->handle_image(reader);
}

std::string status_text(const char* call, int status)
{
    return std::string(call) + " failed (status " + std::to_string(status) + ")";
}

} // namespace

NdkCamera::NdkCamera() = default;

NdkCamera::~NdkCamera()
{
    std::lock_guard<std::mutex> g(lock_);
    close_locked();
    if (reader_)
    {
        AImageReader_delete(reader_);  // joins the reader's callback thread
        reader_ = nullptr;
        reader_window_ = nullptr;
    }
}

bool NdkCamera::is_open() const
{
    std::lock_guard<std::mutex> g(lock_);
    return session_ != nullptr;
}

std::string NdkCamera::last_error() const
{
    std::lock_guard<std::mutex> g(err_lock_);
    return error_;
}

void NdkCamera::set_error(const std::string& e)
{
    LOGE("%s", e.c_str());
    std::lock_guard<std::mutex> g(err_lock_);
    error_ = e;
}

void NdkCamera::handle_device_error(const char* what, int error)
{
    // may run while close() holds lock_: only err_lock_ here
    streaming_ = false;
    set_error(std::string(what) + (error ? " (error " + std::to_string(error) + ")" : std::string()));
}

int NdkCamera::open(int facing)
{
    std::lock_guard<std::mutex> g(lock_);
    close_locked();
    {
        std::lock_guard<std::mutex> ge(err_lock_);
        error_.clear();
    }

    if (facing != FACING_FRONT && facing != FACING_BACK)
    {
        set_error("camera facing must be 0 (front) or 1 (back), got " + std::to_string(facing));
        return -1;
    }

    manager_ = ACameraManager_create();
    if (!manager_)
    {
        set_error("ACameraManager_create failed");
        return -1;
    }

    // 1. the first camera with the wanted facing: its id, orientation, sizes
    std::string camera_id;
    int sensor_orientation = 0;
    std::vector<litedet_demo::StreamSize> sizes;
    {
        ACameraIdList* ids = nullptr;
        camera_status_t st = ACameraManager_getCameraIdList(manager_, &ids);
        if (st != ACAMERA_OK || !ids)
        {
            set_error(status_text("ACameraManager_getCameraIdList", st));
            close_locked();
            return -1;
        }
        for (int i = 0; i < ids->numCameras && camera_id.empty(); i++)
        {
            const char* id = ids->cameraIds[i];
            ACameraMetadata* meta = nullptr;
            if (ACameraManager_getCameraCharacteristics(manager_, id, &meta) != ACAMERA_OK || !meta)
                continue;

            ACameraMetadata_const_entry e{};
            const bool has_facing = ACameraMetadata_getConstEntry(meta, ACAMERA_LENS_FACING, &e) == ACAMERA_OK && e.count > 0;
            const int lens = has_facing ? (int)e.data.u8[0] : -1;
            const bool wanted = facing == FACING_FRONT ? lens == ACAMERA_LENS_FACING_FRONT : lens == ACAMERA_LENS_FACING_BACK;
            if (wanted)
            {
                camera_id = id;
                ACameraMetadata_const_entry o{};
                if (ACameraMetadata_getConstEntry(meta, ACAMERA_SENSOR_ORIENTATION, &o) == ACAMERA_OK && o.count > 0)
                    sensor_orientation = o.data.i32[0];

                ACameraMetadata_const_entry s{};
                if (ACameraMetadata_getConstEntry(meta, ACAMERA_SCALER_AVAILABLE_STREAM_CONFIGURATIONS, &s) == ACAMERA_OK)
                {
                    // int32 quadruples: format, width, height, input
                    for (uint32_t k = 0; k + 3 < s.count; k += 4)
                    {
                        const int32_t format = s.data.i32[k];
                        const int32_t input = s.data.i32[k + 3];
                        if (format == AIMAGE_FORMAT_YUV_420_888 && input == ACAMERA_SCALER_AVAILABLE_STREAM_CONFIGURATIONS_OUTPUT)
                            sizes.push_back(litedet_demo::StreamSize{s.data.i32[k + 1], s.data.i32[k + 2]});
                    }
                }
            }
            ACameraMetadata_free(meta);
        }
        ACameraManager_deleteCameraIdList(ids);
    }
    if (camera_id.empty())
    {
        set_error(std::string("this device has no ") + (facing == FACING_FRONT ? "front" : "back") + " camera");
        close_locked();
        return -1;
    }

    const litedet_demo::StreamSize size = litedet_demo::choose_stream_size(sizes, want_width, want_height);
    facing_ = facing;
    rotation_ = litedet_demo::frame_rotation(sensor_orientation, facing == FACING_FRONT, 0);
    mirror_ = facing == FACING_FRONT;
    LOGI("camera %s facing=%d sensor_orientation=%d -> rotation %d mirror %d, stream %dx%d (of %d YUV sizes)",
         camera_id.c_str(), facing, sensor_orientation, rotation_.load(), (int)mirror_.load(), size.w, size.h,
         (int)sizes.size());

    // 2. the image reader (kept across open/close while the size stays the same)
    if (reader_ && (reader_w_ != size.w || reader_h_ != size.h))
    {
        AImageReader_delete(reader_);  // the camera is closed: no frame is in flight
        reader_ = nullptr;
        reader_window_ = nullptr;
    }
    if (!reader_)
    {
        media_status_t ms = AImageReader_new(size.w, size.h, AIMAGE_FORMAT_YUV_420_888, /*maxImages*/ 2, &reader_);
        if (ms != AMEDIA_OK || !reader_)
        {
            reader_ = nullptr;
            set_error(status_text("AImageReader_new", ms));
            close_locked();
            return -1;
        }
        image_listener_.context = this;
        image_listener_.onImageAvailable = on_image_available;
        AImageReader_setImageListener(reader_, &image_listener_);
        ms = AImageReader_getWindow(reader_, &reader_window_);  // owned by the reader: never released here
        if (ms != AMEDIA_OK || !reader_window_)
        {
            set_error(status_text("AImageReader_getWindow", ms));
            AImageReader_delete(reader_);
            reader_ = nullptr;
            reader_window_ = nullptr;
            close_locked();
            return -1;
        }
        reader_w_ = size.w;
        reader_h_ = size.h;
    }

    // 3. the device
    device_callbacks_.context = this;
    device_callbacks_.onDisconnected = on_device_disconnected;
    device_callbacks_.onError = on_device_error;
    camera_status_t st = ACameraManager_openCamera(manager_, camera_id.c_str(), &device_callbacks_, &device_);
    if (st != ACAMERA_OK || !device_)
    {
        device_ = nullptr;
        set_error(st == ACAMERA_ERROR_PERMISSION_DENIED ? std::string("camera permission denied")
                                                        : status_text("ACameraManager_openCamera", st));
        close_locked();
        return -1;
    }

    // 4. a repeating preview request into the image reader
    st = ACameraDevice_createCaptureRequest(device_, TEMPLATE_PREVIEW, &request_);
    if (st == ACAMERA_OK)
        st = ACameraOutputTarget_create(reader_window_, &target_);
    if (st == ACAMERA_OK)
        st = ACaptureRequest_addTarget(request_, target_);
    if (st == ACAMERA_OK)
        st = ACaptureSessionOutputContainer_create(&outputs_);
    if (st == ACAMERA_OK)
        st = ACaptureSessionOutput_create(reader_window_, &output_);
    if (st == ACAMERA_OK)
        st = ACaptureSessionOutputContainer_add(outputs_, output_);
    if (st != ACAMERA_OK)
    {
        set_error(status_text("building the capture request", st));
        close_locked();
        return -1;
    }

    session_callbacks_.context = this;
    session_callbacks_.onClosed = on_session_closed;
    session_callbacks_.onReady = on_session_ready;
    session_callbacks_.onActive = on_session_active;
    st = ACameraDevice_createCaptureSession(device_, outputs_, &session_callbacks_, &session_);
    if (st != ACAMERA_OK || !session_)
    {
        session_ = nullptr;
        set_error(status_text("ACameraDevice_createCaptureSession", st));
        close_locked();
        return -1;
    }

    streaming_ = true;
    st = ACameraCaptureSession_setRepeatingRequest(session_, /*callbacks*/ nullptr, 1, &request_, /*sequenceId*/ nullptr);
    if (st != ACAMERA_OK)
    {
        set_error(status_text("ACameraCaptureSession_setRepeatingRequest", st));
        close_locked();
        return -1;
    }
    return 0;
}

void NdkCamera::close()
{
    std::lock_guard<std::mutex> g(lock_);
    close_locked();
}

void NdkCamera::close_locked()
{
    // frames still queued are dropped from here on, and the one being
    // processed (if any) is waited for
    streaming_ = false;
    {
        std::lock_guard<std::mutex> barrier(frame_lock_);
    }

    if (session_)
    {
        ACameraCaptureSession_stopRepeating(session_);
        ACameraCaptureSession_close(session_);
        session_ = nullptr;
    }
    if (device_)
    {
        ACameraDevice_close(device_);
        device_ = nullptr;
    }
    if (outputs_)
    {
        ACaptureSessionOutputContainer_free(outputs_);
        outputs_ = nullptr;
    }
    if (output_)
    {
        ACaptureSessionOutput_free(output_);
        output_ = nullptr;
    }
    if (request_)
    {
        ACaptureRequest_free(request_);
        request_ = nullptr;
    }
    if (target_)
    {
        ACameraOutputTarget_free(target_);
        target_ = nullptr;
    }
    if (manager_)
    {
        ACameraManager_delete(manager_);
        manager_ = nullptr;
    }
    // reader_ stays (see open()); the destructor deletes it
}

void NdkCamera::handle_image(AImageReader* reader)
{
    AImage* image = nullptr;
    if (AImageReader_acquireLatestImage(reader, &image) != AMEDIA_OK || !image)
        return;

    int32_t format = 0, width = 0, height = 0;
    AImage_getFormat(image, &format);
    AImage_getWidth(image, &width);
    AImage_getHeight(image, &height);

    std::lock_guard<std::mutex> f(frame_lock_);
    if (!streaming_ || format != AIMAGE_FORMAT_YUV_420_888 || width <= 0 || height <= 0)
    {
        AImage_delete(image);
        return;
    }

    litedet_demo::Yuv420Planes p{};
    int32_t y_pixel = 0, u_pixel = 0, y_row = 0, u_row = 0;
    uint8_t* y = nullptr;
    uint8_t* u = nullptr;
    uint8_t* v = nullptr;
    int y_len = 0, u_len = 0, v_len = 0;
    if (AImage_getPlanePixelStride(image, 0, &y_pixel) != AMEDIA_OK || AImage_getPlanePixelStride(image, 1, &u_pixel) != AMEDIA_OK
        || AImage_getPlaneRowStride(image, 0, &y_row) != AMEDIA_OK || AImage_getPlaneRowStride(image, 1, &u_row) != AMEDIA_OK
        || AImage_getPlaneData(image, 0, &y, &y_len) != AMEDIA_OK || AImage_getPlaneData(image, 1, &u, &u_len) != AMEDIA_OK
        || AImage_getPlaneData(image, 2, &v, &v_len) != AMEDIA_OK || !y || !u || !v)
    {
        AImage_delete(image);
        return;
    }
    p.y = y;
    p.u = u;
    p.v = v;
    p.y_pixel_stride = y_pixel;
    p.y_row_stride = y_row;
    p.uv_pixel_stride = u_pixel;  // U and V share strides in YUV_420_888
    p.uv_row_stride = u_row;

    const int rotation = rotation_;
    const bool mirror = mirror_;
    const litedet_demo::Size2 out = litedet_demo::rotated_size(width, height, rotation);
    const int stride = out.w * 4;
    frame_.resize((size_t)stride * out.h);
    litedet_demo::yuv420_to_rgba_rotated(p, width, height, rotation, mirror, frame_.data(), stride);

    // the camera buffer goes back before the (slow) detection
    AImage_delete(image);

    on_frame(frame_.data(), out.w, out.h, stride);
}
