"""Tiny-object detection (helmets on CCTV): timm backbone + PAN with a P2 level + YOLOHead.

87-96 % of the helmet team's objects cover < 0.1 % of the frame. The knobs they want to try are
all recipe keys here, so each experiment is an override, not a fork:

  * P2 (stride 4) level ........ 'model.neck.levels=(3,4,5)' to compare without it
  * box loss and weights ....... model.head.box_loss.type=WIoULoss / InnerIoULoss,
                                  model.head.box_loss.weight=5.0, model.head.dfl_loss.weight=1.0
  * classification loss ........ model.head.cls_loss.type=VarifocalLoss
  * assigner ................... model.head.assigner=ATSSAssigner
  * multi-scale training ....... 'data.multi_scale=(0.5,1.5)'
  * tiny-object oversampling ... data.sampler.weight=8.0  (data.sampler=None turns it off)
  * crop-based training ........ ObjectCrops around data.train (see the comment there)
  * mosaic ..................... see the commented MosaicDataset below

Default data: the built-in SyntheticHelmets (CCTV-like frames of 192 px with up to 10 heads,
helmet_on / helmet_off, box heights 6-24 px at a ~0.55 width/height ratio), so `detlab train recipes/helmet_yolo_p2.py` runs with
no files in about 5-7 minutes on a busy 2-core CPU. recipes/helmet_yolo_p2_coco.py points the same model
at COCO-JSON files. Evaluation reports COCO AP and AP by relative area (AP_rel_tiny < 0.1 % …).

    detlab train recipes/helmet_yolo_p2.py
    detlab train recipes/helmet_yolo_p2.py model.head.box_loss.type=WIoULoss \
        'data.multi_scale=(0.75,1.25)'
    detlab sweep runs/helmet_yolo_p2/version_0/checkpoints/best.ckpt \
        model.head.postprocessor.iou_threshold=0.5,0.6,0.7
"""

from detlab.models.heads import YOLOHead

CLASS_NAMES = ["helmet_on", "helmet_off"]  # SyntheticHelmets labels 0, 1
IMG_SIZE = 192

model = dict(
    type="Model",
    backbone=dict(
        type="TimmBackbone",
        name="mobilenetv4_conv_small",  # 2 M params; fast on CPU. resnet18 etc. for real data
        pretrained=False,                # True (or checkpoint="weights.pth") for real images
        out_indices=(1, 2, 3, 4),        # strides 4, 8, 16, 32 = P2 .. P5
    ),
    neck=dict(
        type="PAN",
        levels=(2, 3, 4, 5),             # P2 keeps 4x4 px objects on >= 1 anchor cell
        out_channels=(32, 48, 64, 96),
        block="c2f",
        depth=0.33,
    ),
    head=dict(
        type=YOLOHead,
        num_classes=len(CLASS_NAMES),
        reg_max=16,                      # P2 covers box sides up to 2 * 15 * 4 = 120 px
        prior_prob=0.01,                 # None: YOLOv8's per-stride init for ~5 objects/class
        # Loss gains of YOLOv8 (box 7.5, cls 0.5, dfl 1.5) as each component's weight; all three
        # are divided by the sum of the assigner's target scores.
        assigner=dict(type="TaskAlignedAssigner", topk=10, alpha=0.5, beta=6.0),
        cls_loss=dict(type="SigmoidBCELoss", weight=0.5),
        box_loss=dict(type="CIoULoss", weight=7.5),
        dfl_loss=dict(type="DFLoss", weight=1.5),
        postprocessor=dict(              # val/test=dict(...) override a stage
            type="BoxPostProcessor",
            score_threshold=0.001,       # mAP evaluation; ~0.25 for deployment
            iou_threshold=0.7,
            max_detections=300,
        ),
    ),
)

_synthetic = dict(
    type="SyntheticHelmets", image_size=IMG_SIZE, img_size=IMG_SIZE, max_objects=10,
    min_size=6, max_size=24, seed=0,     # box-height range in px: the size distribution
)

data = dict(
    train=dict(
        _synthetic, split="train", num_samples=400,
        transforms=[
            dict(type="HorizontalFlip", p=0.5),
            dict(type="RandomBrightnessContrast", brightness_limit=0.2, contrast_limit=0.2,
                 p=0.5),
            # Crop-based training (full-resolution crops around objects instead of shrinking
            # 1920x1080 frames): data["train"] = dict(type="ObjectCrops", dataset=data["train"],
            # size=640, ratio=0.7), each crop holding a whole object (docs/guides/tiny_data.md);
            # a plain albumentations RandomCrop can leave samples without a box.
        ],
    ),
    val=dict(_synthetic, split="val", num_samples=96),
    # `detlab predict` reads files with data.val's letterbox and normalization (no data.predict).
    batch_size=8,
    num_workers=2,
    # Images holding an object below 0.1 % of the image area are drawn 2x as often.
    sampler=dict(type="TinyObjectOversampler", weight=2.0, area_threshold=0.001),
    multi_scale=None,                    # e.g. (0.5, 1.5): random size per batch, x img_size
)

train = dict(
    max_epochs=4,
    optimizer=dict(type="AdamW", lr=2e-3, weight_decay=5e-4),
    scheduler=dict(type="WarmupCosine", warmup_epochs=1, min_lr_ratio=0.05),
    precision="32-true",                 # "16-mixed" / "bf16-mixed" on a GPU
    gradient_clip_val=10.0,
    seed=0,
    num_threads=1,                       # CPU demo on a shared 2-core machine: 1 thread is
                                         # ~3x faster there than 2 contended ones; None = all
)

# Mosaic (4 images per sample; off for the last 2 epochs, as YOLOv8's close_mosaic):
# data["train"] = dict(type="MosaicDataset", dataset=data["train"], p=0.5,
#                      close_mosaic_epochs=2, max_epochs=train["max_epochs"])

evaluator = dict(
    type="CocoEvaluator",
    class_names=CLASS_NAMES,
    primary="AP",
    # relative_areas: the helmet team's buckets (tiny < 0.1 %, small 0.1-0.5 %, medium 0.5-5 %,
    # large > 5 % of the image area), reported as AP_rel_<name> next to COCO's absolute ones.
)
