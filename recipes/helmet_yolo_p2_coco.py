"""helmet_yolo_p2 on your own COCO-JSON data (two classes: helmet_on, helmet_off).

The model, losses, assigner, sampler and evaluator are the parent's; only the data changes.
The paths are left unset on purpose: training stops at once with an error naming the missing
path until they are given, e.g.

    detlab train recipes/helmet_yolo_p2_coco.py \
        data.train.ann_file=/data/helmets/annotations/instances_train.json \
        data.train.img_dir=/data/helmets/images/train \
        data.val.ann_file=/data/helmets/annotations/instances_val.json \
        data.val.img_dir=/data/helmets/images/val

The class names are stated once, in ``data["classes"]`` (label order); the datasets' ``classes``,
``model.head.num_classes`` and ``evaluator.class_names`` follow (detlab.classes). One class of
the same files: add ``"data.classes=['helmet_on']"``.

1920x1080 CCTV frames are letterboxed to 1280 (long side): at that size the median helmet is
~19x35 px, which P2 (stride 4) still covers with several anchor points. For crop-based training
instead, set data.train.img_size=None and add a crop to data.train.transforms (see the parent).
"""

from detlab.recipe import parent

model, data, train, evaluator = parent("helmet_yolo_p2.py")

IMG_SIZE = 1280

data["classes"] = ["helmet_on", "helmet_off"]   # category names of the COCO JSON, label order
del model["head"]["num_classes"], evaluator["class_names"]  # they follow data["classes"]
model["backbone"]["name"] = "resnet18"       # real images: a stronger backbone
model["backbone"]["pretrained"] = True       # or checkpoint="resnet18.safetensors" offline
model["neck"]["out_channels"] = (64, 96, 128, 192)

_coco = dict(type="CocoDetection", img_size=IMG_SIZE, check_files=True)
data["train"] = dict(
    _coco, ann_file=None, img_dir=None,       # set these (see the docstring)
    transforms=data["train"]["transforms"],
)
data["val"] = dict(_coco, ann_file=None, img_dir=None)
# (no data["predict"]: `detlab predict` letterboxes image files like data.val)
data["batch_size"] = 8
data["multi_scale"] = (0.75, 1.25)            # random size per batch around 1280
# Mosaic (YOLOv8 turns it off for the last 10 epochs):
# data["train"] = dict(type="MosaicDataset", dataset=data["train"], p=1.0,
#                      close_mosaic_epochs=10, max_epochs=train["max_epochs"])

train["max_epochs"] = 100
train["precision"] = "16-mixed"              # on a GPU; "32-true" on a CPU
train["scheduler"] = dict(type="WarmupCosine", warmup_epochs=3, min_lr_ratio=0.01)
train["ema"] = dict(decay=0.9999)
train["num_threads"] = None                  # torch's default: every core
