"""Receipt text detection: DBNet (Liao et al., arXiv:1911.08947) on a timm ResNet-18.

Every knob the competition team could not reach is a field here, so it can be overridden at
train, eval, predict and sweep time:
  * DB loss weights (probability 5, threshold 10, binary 1) and the hard-negative ratio 3;
  * every post-processing field, including ``box_unclip_ratio`` / ``polygon_unclip_ratio``
    (``detlab eval CKPT model.head.postprocessor.polygon_unclip_ratio=2.1``);
  * the DB target parameters (shrink ratio, threshold-map range) of the data pipeline.

Default: built-in synthetic receipts (no files needed) at 192 px with a narrow DB neck
(``model.neck.inner_channels=64``) so a run fits in about 10 minutes on a 2-core CPU; the real setup
(HRNet-W44, 1024 px, the competition's JSON) is ``receipt_dbnet_hrnet.py``.
    detlab train recipes/receipt_dbnet.py
    detlab eval runs/receipt_dbnet/version_0/checkpoints/best.ckpt \
        model.head.postprocessor.polygon_unclip_ratio=2.1
    detlab predict runs/receipt_dbnet/version_0/checkpoints/best.ckpt photo.jpg --out preds/
"""

from detlab.models.heads import DBHead

_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet, as timm weights expect

# DB targets, computed in the loader workers (Sec. 3.3 of the paper: r = 0.4, T in [0.3, 0.7]).
_targets = dict(shrink_ratio=0.4, thresh_min=0.3, thresh_max=0.7, min_text_size=8.0)
_synthetic = dict(
    type="SyntheticReceipts",
    image_size=192,
    text_height=(0.05, 0.09),  # cap height 10-17 px at 192 px
    max_angle=4.0,
    ignore_fraction=0.05,      # faint words marked ### (don't care)
    mean=_MEAN,
    std=_STD,
    target_generator=_targets,
)

model = dict(
    type="Model",
    backbone=dict(
        type="TimmBackbone",
        name="resnet18",
        pretrained=False,            # True (or checkpoint="weights.pth") for real data
        out_indices=(1, 2, 3, 4),    # strides 4-32, the levels DB fuses
    ),
    neck=dict(type="DBFPN", inner_channels=64),  # the paper's 256 costs 4x more on a CPU
    head=dict(
        type=DBHead,
        k=50.0,                      # amplifying factor of the approximate binary map
        loss=dict(
            type="DBLoss",
            prob_weight=5.0,
            thresh_weight=10.0,
            binary_weight=1.0,
            negative_ratio=3.0,
        ),
        postprocessor=dict(              # val/test=dict(...) override a stage
            type="DBPostProcessor",
            binarize_threshold=0.3,
            box_threshold=0.6,
            max_candidates=1000,
            min_size=3.0,
            output="polygon",         # or "box" (min-area rectangles)
            box_unclip_ratio=1.5,
            polygon_unclip_ratio=2.0,
            polygon_epsilon=0.01,
        ),
    ),
)

data = dict(
    train=dict(
        **_synthetic, split="train", num_samples=640, seed=0,
        transforms=[
            dict(type="Affine", rotate=(-5, 5), scale=(0.9, 1.1), p=0.5),
            dict(type="RandomBrightnessContrast", brightness_limit=0.2, contrast_limit=0.2,
                 p=0.5),
        ],
    ),
    val=dict(**_synthetic, split="val", num_samples=48, seed=0),
    # `detlab predict CKPT photo.jpg --out DIR`: RGB files normalized like the training data
    # (ImageFiles with data.val's resize and normalization: no data.predict needed).
    batch_size=8,
    num_workers=2,
)

train = dict(
    max_epochs=2,
    optimizer=dict(type="AdamW", lr=2e-3, weight_decay=1e-4),
    scheduler=dict(type="WarmupCosine", warmup_epochs=0.2, min_lr_ratio=0.05),
    precision="32-true",      # "16-mixed" / "bf16-mixed" on a GPU
    gradient_clip_val=5.0,
    seed=0,
)

evaluator = dict(type="TextHmeanEvaluator", iou_threshold=0.5, ignore_overlap=0.5)
