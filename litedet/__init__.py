"""litedet: PyTorch checkpoint -> verified fp16 ncnn bundle for ARM phones."""

__version__ = "0.1.0"
