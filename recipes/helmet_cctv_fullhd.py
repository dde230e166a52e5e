"""helmet_yolo_p2 on full-HD CCTV frames: trained on 640 px crops, evaluated with slicing.

The CCTV helmet team's setting, generated (no files needed): 1920x1080 SyntheticHelmets frames
whose val heads are 24-50 px high (median ~19x35 px, < 0.1 % of the frame), while the train
heads are 80-150 px high, so train's median box area is ~10x val's, as in the team's data
(`detlab check-data recipes/helmet_cctv_fullhd.py` prints the WARNING). Training samples are
ObjectCrops: 640 px windows of the ORIGINAL frame around an object (full resolution), mixed
with 30 % full frames letterboxed to 640. `detlab eval` and `detlab predict` slice each frame
into 640 px tiles with 0.2 overlap (8 tiles) plus the full frame and merge them
(docs/guides/slicing.md). Validation during training stays unsliced (cheap: one forward a
frame instead of nine) unless inference.slicing.during_training=True, which validates (and
picks best.ckpt) on the sliced metric detlab eval reports, at ~10x the validation time.

Each strategy of docs/guides/tiny_objects.md is one override:

  * match train/val sizes ...... data.train.dataset.min_size=24  (heads 24-150 px: ~3x val)
  * crops ...................... data.train.ratio=1.0 (crops only), data.train.size=960
  * box loss ................... model.head.box_loss.type=InnerIoULoss, model.head.box_loss.type=WIoULoss
  * box weight ................. model.head.box_loss.weight=10.0
  * P2 (stride 4) off .......... 'model.neck.levels=(3,4,5)'
  * multi-scale above 640 ...... 'data.multi_scale=(1.0,1.2)'  (640 to 768 px batches)
  * class-aware sampler ........ data.sampler.power=0.5  (0: size weight only, the default)
  * slicing .................... inference.slicing.overlap=0.3, inference.slicing.full_image=False
  * sliced validation .......... inference.slicing.during_training=True  (best.ckpt on sliced mAP)

    detlab check-data recipes/helmet_cctv_fullhd.py
    detlab train recipes/helmet_cctv_fullhd.py model.head.box_loss.type=InnerIoULoss
    detlab eval runs/helmet_cctv_fullhd/version_0/checkpoints/best.ckpt inference.slicing.slice_height=960
    detlab sweep runs/helmet_cctv_fullhd/version_0/checkpoints/best.ckpt inference.slicing.merge=nms,greedy_nmm
"""

from detlab.recipe import parent

model, data, train, evaluator = parent("helmet_yolo_p2.py")

FRAME = (1080, 1920)                         # (h, w) of a CCTV frame
IMG_SIZE = 640                               # network input: crops and tiles at scale 1

_frames = dict(
    type="SyntheticHelmets", image_size=FRAME, img_size=IMG_SIZE, max_objects=8, seed=0,
    noise_tile=64,                           # cheap background: a frame renders in ~20 ms
)
data["train"] = dict(
    type="ObjectCrops", size=IMG_SIZE, ratio=0.7,   # 70 % crops, 30 % full frames
    dataset=dict(_frames, split="train", num_samples=48, min_size=80, max_size=150,
                 transforms=data["train"]["transforms"]),
)
data["val"] = dict(_frames, split="val", num_samples=12, min_size=24, max_size=50)
data["batch_size"] = 4
# Size weight as the parent (images with an object < 0.1 % of the frame drawn 2x); power > 0
# adds the class weight (ClassAwareSampler's (n_max / n_c) ** power).
data["sampler"] = dict(type="SizeClassSampler", tiny_weight=2.0, area_threshold=0.001,
                       power=0.0)

inference = dict(
    slicing=dict(
        type="SlicedInference",
        slice_height=IMG_SIZE,               # 640 px tiles of the original frame
        overlap=0.2,                         # tiles at x = 0, 512, 1024, 1280; y = 0, 440
        full_image=True,                     # plus the whole frame letterboxed to 640
        merge="greedy_nmm",
        match_metric="ios",
        match_threshold=0.5,
        during_training=False,               # True: validate sliced too (~10x val time)
    ),
)

train["max_epochs"] = 6
