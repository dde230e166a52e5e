"""helmet_yolo on a dense CSP-Darknet backbone instead of the depthwise MobileNetV4, same neck,
head, data and budget, so the backbone is the one difference between two runs:

    detlab train recipes/helmet_yolo.py          # mobilenetv4_conv_small: 1.3 M params
    detlab train recipes/helmet_yolo_dense.py    # cs3darknet_s: 2.8 M params, dense 3x3 convs

cs3darknet_s is the YOLOv5s/YOLOv8s backbone layout (CSP stages of widths 32 ... 512 at depth
1/3). Its P3-P5 are timm levels 2, 3, 4 (strides 8, 16, 32); cspdarknet53 has an extra
stride-1 level, so there they are (3, 4, 5). It costs ~3x the FLOPs of mobilenetv4_conv_small
but runs ~1.5x more FLOPs per second on a CPU, and far more on a GPU, where depthwise
convolutions are memory-bound: pick it on a GPU, or on a CPU when accuracy is worth ~2x the
step time. docs/guides/timm-backbone.md has the measurements.
"""

from detlab.recipe import parent

model, data, train, evaluator = parent("helmet_yolo.py")

model["backbone"]["name"] = "cs3darknet_s"     # channels 128, 256, 512 at strides 8, 16, 32
model["backbone"]["out_indices"] = (2, 3, 4)   # P3-P5 (cspdarknet53: (3, 4, 5))
