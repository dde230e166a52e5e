"""helmet_yolo_p2 without the P2 level (PAN over P3-P5, strides 8/16/32), same data and budget,
so the effect of P2 on tiny objects is one comparison of two runs:

    detlab train recipes/helmet_yolo.py
    detlab train recipes/helmet_yolo_p2.py

Compare AP and AP_rel_tiny (objects below 0.1 % of the image area) of the two runs.
"""

from detlab.recipe import parent

model, data, train, evaluator = parent("helmet_yolo_p2.py")

model["backbone"]["out_indices"] = (2, 3, 4)   # strides 8, 16, 32
model["neck"]["levels"] = (3, 4, 5)
model["neck"]["out_channels"] = (48, 64, 96)
