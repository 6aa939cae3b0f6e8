// litedet Android demo: camera preview through the NDK camera2 API.
//
// NdkCamera opens the front or back camera, streams YUV_420_888 frames into an
// AImageReader and hands each one to on_frame() as an upright RGBA image
// (turned by the sensor orientation, mirrored for the front camera). The
// callback runs on the image reader's own thread. No OpenCV or ncnn here.
//
// A subclass must call close() in its own destructor, so that no on_frame()
// runs while the subclass part of the object is being destroyed.

#ifndef LITEDET_DEMO_NDKCAMERA_H
#define LITEDET_DEMO_NDKCAMERA_H

#include <camera/NdkCameraCaptureSession.h>
#include <camera/NdkCameraDevice.h>
#include <camera/NdkCameraError.h>
#include <camera/NdkCameraManager.h>
#include <camera/NdkCameraMetadata.h>
#include <camera/NdkCaptureRequest.h>
#include <media/NdkImage.h>
#include <media/NdkImageReader.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

class NdkCamera
{
public:
    enum Facing
    {
        FACING_FRONT = 0,
        FACING_BACK = 1
    };

    NdkCamera();
    virtual ~NdkCamera();

    NdkCamera(const NdkCamera&) = delete;
    NdkCamera& operator=(const NdkCamera&) = delete;

    // Open the first camera with this facing (0 front, 1 back) and start the
    // preview stream. Closes a camera that is already open. Returns 0 on
    // success; otherwise last_error() says what failed.
    int open(int facing);

    // Stop the stream and release the camera. Safe to call when closed. When
    // it returns, on_frame() is no longer running and will not be called.
    void close();

    bool is_open() const;
    std::string last_error() const;

    // Called for every frame, on the image reader's thread: an upright RGBA
    // image of w x h pixels, `stride` bytes per row, valid only during the call.
    virtual void on_frame(const unsigned char* rgba, int w, int h, int stride) = 0;

    // What the NDK callbacks forward to (public because they are plain C
    // callbacks); not for direct use.
    void handle_image(AImageReader* reader);
    void handle_device_error(const char* what, int error);

protected:
    // The preview size asked of the camera (landscape, before rotation).
    int want_width = 640;
    int want_height = 480;

private:
    void close_locked();
    void set_error(const std::string& e);

    // lock_ guards the camera objects below; the NDK callbacks never take it
    // (see ndkcamera.cpp). err_lock_ guards error_ only.
    mutable std::mutex lock_;
    mutable std::mutex err_lock_;
    std::string error_;

    int facing_ = FACING_BACK;
    // read by the image reader's thread
    std::atomic<bool> streaming_{false};
    std::atomic<int> rotation_{0};      // clockwise, applied to every frame
    std::atomic<bool> mirror_{false};   // after rotation (front camera)
    int reader_w_ = 0;
    int reader_h_ = 0;

    ACameraManager* manager_ = nullptr;
    ACameraDevice* device_ = nullptr;
    AImageReader* reader_ = nullptr;
    ANativeWindow* reader_window_ = nullptr;  // owned by reader_
    ACameraOutputTarget* target_ = nullptr;
    ACaptureRequest* request_ = nullptr;
    ACaptureSessionOutputContainer* outputs_ = nullptr;
    ACaptureSessionOutput* output_ = nullptr;
    ACameraCaptureSession* session_ = nullptr;

    ACameraDevice_StateCallbacks device_callbacks_{};
    ACameraCaptureSession_stateCallbacks session_callbacks_{};
    AImageReader_ImageListener image_listener_{};

    // held by the image reader's thread while it converts a frame and runs
    // on_frame(); close() takes it once after clearing streaming_, so when
    // close() returns no on_frame() is running
    std::mutex frame_lock_;
    std::vector<unsigned char> frame_;  // guarded by frame_lock_
};

#endif // LITEDET_DEMO_NDKCAMERA_H
