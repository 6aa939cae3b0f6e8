// litedet Android demo: the JNI bridge to liblitedetncnn.so (cpp/litedet_jni.cpp).
//
// Every method here is implemented in litedet_jni.cpp as
// Java_com_litedet_demo_LiteDetNcnn_<name>; keep both sides in step.

package com.litedet.demo;

import android.content.res.AssetManager;
import android.view.Surface;

public class LiteDetNcnn
{
    public static final int CPU = 0;
    public static final int GPU = 1;

    public static final int FACING_FRONT = 0;
    public static final int FACING_BACK = 1;

    // Names of the models in the assets: NAME for every NAME.cfg, sorted.
    public native String[] listModels(AssetManager mgr);

    // Load NAME.cfg and the NAME.param / NAME.bin it names; cpugpu is CPU or GPU.
    // Returns false on failure (getLastError() says why); the previous model is
    // unloaded either way. May be called from a background thread.
    public native boolean loadModel(AssetManager mgr, String name, int cpugpu);

    // The last error of loadModel/openCamera (or of a model that failed on a
    // frame), "" when there is none.
    public native String getLastError();

    // Number of Vulkan GPUs ncnn can use (0: CPU only).
    public native int getGpuCount();

    // facing: FACING_FRONT or FACING_BACK. Needs the CAMERA permission.
    public native boolean openCamera(int facing);

    public native boolean closeCamera();

    // Where frames with boxes are drawn; null detaches the surface.
    public native boolean setOutputWindow(Surface surface);

    static {
        System.loadLibrary("litedetncnn");
    }
}
