"""Where each dataset comes from: the instructions of CoOp's DATASETS.md, by catalog key.

Quoted in every missing-file error, so a user learns what to download and where to put it
without leaving the terminal. The fixed split files are the ones every CoOp-family paper uses.
"""
from __future__ import annotations

DATASETS_MD = "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md"

_GDRIVE = "https://drive.google.com/file/d/{}/view"

#: Download links of CoOp's fixed split files, by catalog key.
SPLIT_LINKS: dict[str, str] = {
    "caltech101": _GDRIVE.format("1hyarUivQE36mY6jSomru6Fjd-JzwcCzN"),
    "oxford_pets": _GDRIVE.format("1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs"),
    "stanford_cars": _GDRIVE.format("1ObCFbaAgVu0I-k_Au-gIUcefirdAuizT"),
    "oxford_flowers": _GDRIVE.format("1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT"),
    "food101": _GDRIVE.format("1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl"),
    "sun397": _GDRIVE.format("1y2RD81BYuiyvebdN-JymPfyWYcd8_MUq"),
    "dtd": _GDRIVE.format("1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x"),
    "eurosat": _GDRIVE.format("1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o"),
    "ucf101": _GDRIVE.format("1I0S0q91hJfsV9Gf4xDIjgDq4AqBNJb1y"),
}

_IMAGENET_CLASSNAMES = ("classnames.txt: copy $DATA/imagenet/classnames.txt (CLIP's class names, "
                        + _GDRIVE.format("1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF") + ")")

#: What to download, per catalog key (the split file link is added from SPLIT_LINKS).
HOW_TO_GET: dict[str, str] = {
    "imagenet": ("images/train and images/val from https://image-net.org (1,000 wnid folders each); "
                 + _IMAGENET_CLASSNAMES.replace("copy $DATA/imagenet/classnames.txt", "download")),
    "caltech101": "101_ObjectCategories.tar.gz from https://data.caltech.edu/records/mzrjq-6wc02, "
                  "extracted into caltech-101/",
    "oxford_pets": "images.tar.gz and annotations.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/pets/",
    "stanford_cars": "cars_train/, cars_test/, devkit/ and cars_test_annos_withlabels.mat "
                     "(Stanford Cars, http://ai.stanford.edu/~jkrause/cars/car_dataset.html)",
    "oxford_flowers": "102flowers.tgz (-> jpg/) and imagelabels.mat from "
                      "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/, plus cat_to_name.json "
                      "(" + _GDRIVE.format("1AkcxCXeK_RCGCEC_GvmWxjcjaNhu-at0") + ")",
    "food101": "food-101.tar.gz from https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/, "
               "extracted into the data root (gives food-101/images/)",
    "fgvc_aircraft": "fgvc-aircraft-2013b.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/; "
                     "keep its data/ folder, renamed fgvc_aircraft/ (images/, variants.txt, "
                     "images_variant_{train,val,test}.txt)",
    "sun397": "SUN397.tar.gz and Partitions.zip from https://vision.princeton.edu/projects/2010/SUN/, "
              "extracted into sun397/",
    "dtd": "dtd-r1.0.1.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/dtd/, extracted into the data root",
    "eurosat": "EuroSAT.zip (RGB) from https://github.com/phelber/EuroSAT, extracted into eurosat/ (gives 2750/)",
    "ucf101": "UCF-101-midframes.zip (" + _GDRIVE.format("10Jqome3vtUA2keJkNanAiFpgbyC9Hc2O")
              + "), extracted into ucf101/",
    "imagenetv2": "imagenetv2-matched-frequency.tar.gz from https://github.com/modestyachts/ImageNetV2, "
                  "extracted into imagenetv2/; " + _IMAGENET_CLASSNAMES,
    "imagenet_sketch": "ImageNet-Sketch from https://github.com/HaohanWang/ImageNet-Sketch, extracted into "
                       "imagenet-sketch/ (images/<wnid>/); " + _IMAGENET_CLASSNAMES,
    "imagenet_a": "imagenet-a.tar from https://github.com/hendrycks/natural-adv-examples, extracted into "
                  "imagenet-adversarial/; " + _IMAGENET_CLASSNAMES,
    "imagenet_r": "imagenet-r.tar from https://github.com/hendrycks/imagenet-r, extracted into "
                  "imagenet-rendition/; " + _IMAGENET_CLASSNAMES,
    "loreal_world": "nothing to download, the procedural world is written by `loreal world write --root DATA`",
}


def how_to_get(key: str) -> str:
    """One paragraph telling the user how to obtain dataset ``key`` (a catalog key)."""
    text = f"Get it: {HOW_TO_GET[key]}."
    if key in SPLIT_LINKS:
        text += f" Split file: {SPLIT_LINKS[key]}."
    return f"{text} Full instructions: {DATASETS_MD}"
