"""Dataset constants written once: class names and normalisation of the data sets the
families are trained on (stdlib only, every layer may use them)."""

from __future__ import annotations

__all__ = ["MAX_CLASS_NAME", "class_name_problem", "COCO_CLASSES", "IMAGENET_MEAN_RGB", "IMAGENET_STD_RGB", "NANODET_MEAN_BGR", "NANODET_STD_BGR",
           "default_class_names", "CITYSCAPES_CLASSES", "CITYSCAPES_PALETTE_RGB", "CITYSCAPES_MEAN_RGB", "CITYSCAPES_STD_RGB",
           "segmentation_class_names", "palette_rgb", "VOC_CLASSES", "voc_class_names"]

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

# PASCAL VOC's 20 classes in the order of RefineDet.PyTorch's (and SSD's) data/voc0712.py
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

# torchvision's ImageNet normalisation, on 0..255 RGB pixels
IMAGENET_MEAN_RGB = (123.675, 116.28, 103.53)
IMAGENET_STD_RGB = (58.395, 57.12, 57.375)
# NanoDet's (config: normalize), on 0..255 BGR pixels: the same statistics in BGR order
NANODET_MEAN_BGR = (103.53, 116.28, 123.675)
NANODET_STD_BGR = (57.375, 57.12, 58.395)

# Cityscapes' 19 evaluation classes (train ids 0..18) and their official colours (cityscapesScripts
# labels.py), the palette of litedet's segmentation overlays for a 19-class model
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic_light", "traffic_sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
CITYSCAPES_PALETTE_RGB = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0),
    (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)
# CoinCheung/BiSeNet's Cityscapes normalisation (RGB), on 0..1 pixels as it states them
CITYSCAPES_MEAN_RGB = (0.3257, 0.3690, 0.3223)
CITYSCAPES_STD_RGB = (0.2112, 0.2148, 0.2115)


def segmentation_class_names(n: int) -> list[str]:
    """Cityscapes' names for a 19-class segmentation model, else class_0 .. class_{n-1}."""
    return list(CITYSCAPES_CLASSES) if n == len(CITYSCAPES_CLASSES) else [f"class_{i}" for i in range(n)]


def palette_rgb(n: int) -> list[tuple[int, int, int]]:
    """The overlay colour of each of n classes: Cityscapes' for 19 classes, else a fixed
    golden-ratio hue walk (distinct neighbours, the same colours on every run and in the C++ demo)."""
    if n == len(CITYSCAPES_PALETTE_RGB):
        return list(CITYSCAPES_PALETTE_RGB)
    import colorsys

    return [tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 0.95))
            for i in range(n)]


def default_class_names(n: int) -> list[str]:
    """COCO's names for an 80-class model, else class_0 .. class_{n-1}."""
    return list(COCO_CLASSES) if n == len(COCO_CLASSES) else [f"class_{i}" for i in range(n)]


def voc_class_names(n: int) -> list[str]:
    """VOC's names for a 20-class model, else class_0 .. class_{n-1}."""
    return list(VOC_CLASSES) if n == len(VOC_CLASSES) else [f"class_{i}" for i in range(n)]


MAX_CLASS_NAME = 128  # characters of a class name (drawn on images, written into NAME.cfg)


def class_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a class name (None when it can): 1 to MAX_CLASS_NAME printable
    characters, no commas (NAME.cfg lists names comma-separated), no surrounding spaces, no
    surrogates (OpenCV cannot draw them)."""
    if 0 < len(name) <= MAX_CLASS_NAME and name.isprintable() and "," not in name and name == name.strip():
        return None
    return f"a class name is 1 to {MAX_CLASS_NAME} printable characters, without commas or surrounding spaces"
