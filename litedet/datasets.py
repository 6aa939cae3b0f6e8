"""Dataset constants written once: class names and normalisation of the data sets the
families are trained on (stdlib only, every layer may use them)."""

from __future__ import annotations

__all__ = ["MAX_CLASS_NAME", "class_name_problem", "COCO_CLASSES", "IMAGENET_MEAN_RGB", "IMAGENET_STD_RGB", "NANODET_MEAN_BGR", "NANODET_STD_BGR",
           "default_class_names"]

# COCO 2017's 80 detection classes in the order NanoDet (and torchvision's detection models) use
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic_light", "fire_hydrant", "stop_sign", "parking_meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports_ball", "kite",
    "baseball_bat", "baseball_glove", "skateboard", "surfboard", "tennis_racket", "bottle",
    "wine_glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot_dog", "pizza", "donut", "cake", "chair", "couch", "potted_plant",
    "bed", "dining_table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell_phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy_bear", "hair_drier", "toothbrush",
)

# torchvision's ImageNet normalisation, on 0..255 RGB pixels
IMAGENET_MEAN_RGB = (123.675, 116.28, 103.53)
IMAGENET_STD_RGB = (58.395, 57.12, 57.375)
# NanoDet's (config: normalize), on 0..255 BGR pixels: the same statistics in BGR order
NANODET_MEAN_BGR = (103.53, 116.28, 123.675)
NANODET_STD_BGR = (57.375, 57.12, 58.395)


def default_class_names(n: int) -> list[str]:
    """COCO's names for an 80-class model, else class_0 .. class_{n-1}."""
    return list(COCO_CLASSES) if n == len(COCO_CLASSES) else [f"class_{i}" for i in range(n)]


MAX_CLASS_NAME = 128  # characters of a class name (drawn on images, written into NAME.cfg)


def class_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a class name (None when it can): 1 to MAX_CLASS_NAME printable
    characters, no commas (NAME.cfg lists names comma-separated), no surrounding spaces, no
    surrogates (OpenCV cannot draw them)."""
    if 0 < len(name) <= MAX_CLASS_NAME and name.isprintable() and "," not in name and name == name.strip():
        return None
    return f"a class name is 1 to {MAX_CLASS_NAME} printable characters, without commas or surrounding spaces"
