"""The competition setup: DBNet on HRNet-W44 at 1024 px, on the receipt competition's JSON.

Variant of ``receipt_dbnet.py`` (same loss weights, post-processing fields and evaluator).
The annotation paths are placeholders; set them on the command line:
    detlab train recipes/receipt_dbnet_hrnet.py \
        data.train.ann_file=/data/receipts/train.json data.train.img_dir=/data/receipts/train \
        data.val.ann_file=/data/receipts/val.json data.val.img_dir=/data/receipts/val \
        model.backbone.checkpoint=/weights/hrnet_w44.pth
    detlab eval CKPT model.head.postprocessor.polygon_unclip_ratio=2.1
Needs a GPU: HRNet-W44 + the 256-channel DB neck at 1024 px is ~650 GFLOP per image forward
(torch.utils.flop_counter), ~2 TFLOP per image for a training step.
"""

from detlab.recipe import parent

model, data, train, evaluator = parent("receipt_dbnet.py")

model["backbone"].update(
    name="hrnet_w44",
    pretrained=False,         # set checkpoint=<timm hrnet_w44 state dict> for ImageNet weights
    out_indices=(1, 2, 3, 4),  # strides 4-32
    # The four HRNet branches (44/88/176/352 channels, the HRNetV2 representation) rather than
    # timm's default "incre" features (128-1024 channels from the classification head).
    feature_location="",
)
model["neck"]["inner_channels"] = 256  # the paper's width

_targets = data["train"]["target_generator"]
_real = dict(
    type="ReceiptJson",
    img_dir=None,               # default: the annotation file's folder
    img_size=1024,
    resize="long_side",
    mean=data["train"]["mean"],
    std=data["train"]["std"],
    target_generator=_targets,
)
data["train"] = dict(
    _real, ann_file="SET_ME/train.json",
    transforms=[
        dict(type="Affine", rotate=(-10, 10), scale=(0.8, 1.2), p=0.5),
        dict(type="RandomBrightnessContrast", brightness_limit=0.2, contrast_limit=0.2, p=0.5),
    ],
)
data["val"] = dict(_real, ann_file="SET_ME/val.json")
data.update(batch_size=4, num_workers=4)

train.update(
    max_epochs=300,
    optimizer=dict(type="AdamW", lr=1e-3, weight_decay=1e-4),
    scheduler=dict(type="WarmupCosine", warmup_epochs=3, min_lr_ratio=0.01),
    precision="16-mixed",
)
