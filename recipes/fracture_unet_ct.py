"""Vertebral-fracture segmentation on your own CT studies (NIfTI files or DICOM series + masks).

The model, losses and evaluator of ``fracture_unet.py``; the data are real CT volumes read by
``CTVolumeSlices`` (Hounsfield units, RAS orientation, HU window(s), 2.5D slices), split into
train/val by case, trained on lesion-centred patches and validated on whole slices.

    detlab train recipes/fracture_unet_ct.py data.root=/data/Task           # Decathlon folder
    detlab train recipes/fracture_unet_ct.py data.root=/data/cases.csv      # case_id,image,mask
    detlab show-data recipes/fracture_unet_ct.py data.root=/data/Task --out batch/
    detlab predict runs/fracture_unet_ct/version_0/checkpoints/best.ckpt study.nii.gz --out pred/

Changing ``WINDOWS`` or ``CONTEXT`` changes the number of input channels: edit them here (the
backbone's ``in_chans`` follows) rather than overriding ``data.train.*`` on the command line.
See docs/guides/fracture_ct.md.
"""

from detlab.recipe import parent

model, train, evaluator = parent("fracture_unet.py", "model", "train", "evaluator")

# Bone window (level 500, width 1500) as in the synthetic recipe; add e.g.
# dict(level=40, width=400) for soft tissue: each window is one more set of channels.
WINDOWS = [dict(min=-250, max=1250)]
CONTEXT = 1          # 2.5D: the slice and one neighbour on each side -> 3 channels per window

_slices = dict(
    type="CTVolumeSlices",
    # root: filled from data.root
    val_fraction=0.2,    # of the cases (never of the slices); or val_cases=["case_007", ...]
    seed=0,
    windows=WINDOWS,
    context=CONTEXT,
    mask_labels=None,    # default (0, 1), or the labels of a Decathlon dataset.json
    skip_bad_cases=False,
    cache_size=4,        # decoded volumes per worker; None keeps the whole split in memory
)

model["backbone"]["in_chans"] = len(WINDOWS) * (2 * CONTEXT + 1)

data = dict(
    root=None,
    train=dict(
        type="LesionPatches",
        dataset=dict(
            _slices, split="train",
            transforms=[
                dict(type="HorizontalFlip", p=0.5),
                dict(type="Affine", rotate=(-10, 10), scale=(0.9, 1.1), p=0.5),
            ],
        ),
        patch_size=192,      # also the sliding-window size of `detlab predict` on volumes
        positive_ratio=0.5,  # half of the patches are centred on a lesion
    ),
    val=dict(_slices, split="val"),
    predict=None,  # `detlab predict` reads volumes itself (windows/context from data.val)
    batch_size=8,
    num_workers=2,
    sampler=None,  # LesionPatches already balances; PositiveOversampler suits whole slices
)

train["max_epochs"] = 30
