// litedet Android demo: camera preview with the detections of a litedet model.
//
// The model spinner lists the models found in the assets (every NAME.cfg that
// `litedet android push` wrote), the second spinner picks CPU or GPU (Vulkan).
// Camera frames never reach Java: the native side opens the camera, runs the
// model and draws into the SurfaceView.

package com.litedet.demo;

import android.Manifest;
import android.app.Activity;
import android.content.pm.PackageManager;
import android.graphics.PixelFormat;
import android.os.Bundle;
import android.util.Log;
import android.view.SurfaceHolder;
import android.view.SurfaceView;
import android.view.View;
import android.view.WindowManager;
import android.widget.AdapterView;
import android.widget.ArrayAdapter;
import android.widget.Button;
import android.widget.Spinner;
import android.widget.Toast;

import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

public class MainActivity extends Activity implements SurfaceHolder.Callback
{
    private static final String TAG = "litedet";
    private static final int REQUEST_CAMERA = 100;

    private final LiteDetNcnn ncnn = new LiteDetNcnn();
    // model loading is slow (hundreds of ms): one background thread, in order
    private final ExecutorService loader = Executors.newSingleThreadExecutor();

    private int facing = LiteDetNcnn.FACING_BACK;
    private String[] models = new String[0];
    private int currentModel = 0;
    private int currentCpuGpu = LiteDetNcnn.CPU;
    private boolean resumed = false;
    private boolean askedForCamera = false;

    private Spinner spinnerModel;
    private Spinner spinnerCpuGpu;

    @Override
    public void onCreate(Bundle savedInstanceState)
    {
        super.onCreate(savedInstanceState);
        setContentView(R.layout.main);

        getWindow().addFlags(WindowManager.LayoutParams.FLAG_KEEP_SCREEN_ON);

        SurfaceView cameraView = (SurfaceView) findViewById(R.id.cameraview);
        cameraView.getHolder().setFormat(PixelFormat.RGBA_8888);
        cameraView.getHolder().addCallback(this);

        Button buttonSwitchCamera = (Button) findViewById(R.id.buttonSwitchCamera);
        buttonSwitchCamera.setOnClickListener(new View.OnClickListener() {
            @Override
            public void onClick(View v)
            {
                facing = facing == LiteDetNcnn.FACING_BACK ? LiteDetNcnn.FACING_FRONT : LiteDetNcnn.FACING_BACK;
                if (hasCameraPermission())
                {
                    ncnn.closeCamera();
                    openCamera();
                }
            }
        });

        // models: whatever *.cfg the assets hold
        models = ncnn.listModels(getAssets());
        spinnerModel = (Spinner) findViewById(R.id.spinnerModel);
        String[] entries = models.length > 0 ? models : new String[] { getString(R.string.no_model) };
        ArrayAdapter<String> modelAdapter = new ArrayAdapter<String>(this, android.R.layout.simple_spinner_item, entries);
        modelAdapter.setDropDownViewResource(android.R.layout.simple_spinner_dropdown_item);
        spinnerModel.setAdapter(modelAdapter);
        spinnerModel.setEnabled(models.length > 0);
        spinnerModel.setOnItemSelectedListener(new AdapterView.OnItemSelectedListener() {
            @Override
            public void onItemSelected(AdapterView<?> parent, View view, int position, long id)
            {
                if (position != currentModel)
                {
                    currentModel = position;
                    reload();
                }
            }

            @Override
            public void onNothingSelected(AdapterView<?> parent)
            {
            }
        });

        spinnerCpuGpu = (Spinner) findViewById(R.id.spinnerCPUGPU);
        spinnerCpuGpu.setOnItemSelectedListener(new AdapterView.OnItemSelectedListener() {
            @Override
            public void onItemSelected(AdapterView<?> parent, View view, int position, long id)
            {
                if (position != currentCpuGpu)
                {
                    currentCpuGpu = position;
                    reload();
                }
            }

            @Override
            public void onNothingSelected(AdapterView<?> parent)
            {
            }
        });

        if (models.length == 0)
        {
            Toast.makeText(this, R.string.no_model_hint, Toast.LENGTH_LONG).show();
        }
        else
        {
            reload();
        }
    }

    private void reload()
    {
        if (models.length == 0)
            return;
        final String name = models[currentModel];
        final int cpugpu = currentCpuGpu;
        loader.execute(new Runnable() {
            @Override
            public void run()
            {
                boolean ok = ncnn.loadModel(getAssets(), name, cpugpu);
                if (ok)
                {
                    Log.i(TAG, "loaded " + name + " on " + (cpugpu == LiteDetNcnn.GPU ? "GPU" : "CPU"));
                    return;
                }
                final String error = ncnn.getLastError();
                Log.e(TAG, "loadModel " + name + " failed: " + error);
                runOnUiThread(new Runnable() {
                    @Override
                    public void run()
                    {
                        if (isFinishing())
                            return;
                        Toast.makeText(MainActivity.this, error, Toast.LENGTH_LONG).show();
                        // no usable GPU: fall back to the CPU (reloads through the listener)
                        if (cpugpu == LiteDetNcnn.GPU && currentCpuGpu == LiteDetNcnn.GPU)
                            spinnerCpuGpu.setSelection(LiteDetNcnn.CPU);
                    }
                });
            }
        });
    }

    private boolean hasCameraPermission()
    {
        return checkSelfPermission(Manifest.permission.CAMERA) == PackageManager.PERMISSION_GRANTED;
    }

    private void openCamera()
    {
        if (!ncnn.openCamera(facing))
        {
            String error = ncnn.getLastError();
            Log.e(TAG, "openCamera failed: " + error);
            Toast.makeText(this, getString(R.string.camera_failed) + ": " + error, Toast.LENGTH_LONG).show();
        }
    }

    @Override
    public void surfaceCreated(SurfaceHolder holder)
    {
    }

    @Override
    public void surfaceChanged(SurfaceHolder holder, int format, int width, int height)
    {
        ncnn.setOutputWindow(holder.getSurface());
    }

    @Override
    public void surfaceDestroyed(SurfaceHolder holder)
    {
        ncnn.setOutputWindow(null);
    }

    @Override
    public void onResume()
    {
        super.onResume();
        resumed = true;

        if (hasCameraPermission())
        {
            openCamera();
        }
        else if (!askedForCamera)
        {
            // asked once per activity: the permission dialog pauses and resumes us
            askedForCamera = true;
            requestPermissions(new String[] { Manifest.permission.CAMERA }, REQUEST_CAMERA);
        }
    }

    @Override
    public void onRequestPermissionsResult(int requestCode, String[] permissions, int[] grantResults)
    {
        super.onRequestPermissionsResult(requestCode, permissions, grantResults);
        if (requestCode != REQUEST_CAMERA)
            return;
        if (grantResults.length > 0 && grantResults[0] == PackageManager.PERMISSION_GRANTED)
        {
            if (resumed)
                openCamera();
        }
        else
        {
            Toast.makeText(this, R.string.camera_permission_needed, Toast.LENGTH_LONG).show();
        }
    }

    @Override
    public void onPause()
    {
        super.onPause();
        resumed = false;
        ncnn.closeCamera();
    }

    @Override
    public void onDestroy()
    {
        super.onDestroy();
        loader.shutdown();
    }
}
