"""Text prompts of the CoOp protocol, as data: each dataset's hand-crafted prompt, CLIP's 80 ImageNet templates and
the 7 of them CoOp and Tip-Adapter ensemble, and Tip-Adapter's per-dataset template lists.

Sources (line numbers at the commits named): CoOp github.com/KaiyangZhou/CoOp@ff61507 (trainers/zsclip.py,
trainers/imagenet_templates.py, itself copied from CLIP's notebooks/Prompt_Engineering_for_ImageNet.ipynb);
Tip-Adapter github.com/gaopengcuhk/Tip-Adapter@d0e2d6f (datasets/*.py `template = [...]`). Keys are the task
names of tasks/coop (CoOp's configs/datasets/*.yaml stems). A template holds one "{}" for the class name; CoOp
formats it with the class name's underscores replaced by spaces (zsclip.py:43 and :90, coop.py:98), as
`Task.classnames` already holds them.
"""
from __future__ import annotations

# CoOp trainers/zsclip.py:13-29 CUSTOM_TEMPLATES (ZeroshotCLIP, zsclip.py:42), keyed by CoOp's DATASET.NAME there.
COOP_PROMPTS: dict[str, str] = {
    "oxford_pets": "a photo of a {}, a type of pet.",  # zsclip.py:14 OxfordPets
    "oxford_flowers": "a photo of a {}, a type of flower.",  # zsclip.py:15 OxfordFlowers
    "fgvc_aircraft": "a photo of a {}, a type of aircraft.",  # zsclip.py:16 FGVCAircraft
    "dtd": "{} texture.",  # zsclip.py:17 DescribableTextures
    "eurosat": "a centered satellite photo of {}.",  # zsclip.py:18 EuroSAT
    "stanford_cars": "a photo of a {}.",  # zsclip.py:19 StanfordCars
    "food101": "a photo of {}, a type of food.",  # zsclip.py:20 Food101
    "sun397": "a photo of a {}.",  # zsclip.py:21 SUN397
    "caltech101": "a photo of a {}.",  # zsclip.py:22 Caltech101
    "ucf101": "a photo of a person doing {}.",  # zsclip.py:23 UCF101
    "imagenet": "a photo of a {}.",  # zsclip.py:24 ImageNet
}

# CoOp trainers/imagenet_templates.py:3-84 IMAGENET_TEMPLATES: CLIP's 80 ImageNet templates, in CLIP's order.
CLIP_IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

# CoOp trainers/imagenet_templates.py:86-94 IMAGENET_TEMPLATES_SELECT: the 7 templates CoOp's prompt-ensembling
# zero-shot CLIP uses (zsclip.py:68); Tip-Adapter's ImageNet templates are the same 7 (datasets/imagenet.py:177-183).
CLIP_IMAGENET_TEMPLATES_SELECT: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)

# Tip-Adapter's `template = [...]` of each datasets/<file>.py. They are CoOp's prompt (one template) on every
# dataset but ImageNet, where Tip-Adapter ensembles CLIP_IMAGENET_TEMPLATES_SELECT instead of "a photo of a {}.".
TIP_ADAPTER_TEMPLATES: dict[str, tuple[str, ...]] = {
    "oxford_pets": ("a photo of a {}, a type of pet.",),  # datasets/oxford_pets.py:11
    "oxford_flowers": ("a photo of a {}, a type of flower.",),  # datasets/oxford_flowers.py:10
    "fgvc_aircraft": ("a photo of a {}, a type of aircraft.",),  # datasets/fgvc.py:6
    "dtd": ("{} texture.",),  # datasets/dtd.py:8
    "eurosat": ("a centered satellite photo of {}.",),  # datasets/eurosat.py:7
    "stanford_cars": ("a photo of a {}.",),  # datasets/stanford_cars.py:8
    "food101": ("a photo of {}, a type of food.",),  # datasets/food101.py:7
    "sun397": ("a photo of a {}.",),  # datasets/sun397.py:8
    "caltech101": ("a photo of a {}.",),  # datasets/caltech101.py:7
    "ucf101": ("a photo of a person doing {}.",),  # datasets/ucf101.py:8
    "imagenet": CLIP_IMAGENET_TEMPLATES_SELECT,  # datasets/imagenet.py:177-183
}

PROMPT_SETS = ("coop", "coop_ensemble", "clip80", "tip_adapter")


def prompt_templates(dataset: str, which: str = "coop") -> tuple[str, ...]:
    """The templates of one dataset (a tasks/coop task name without "coop/"):

    coop           CoOp's hand-crafted prompt (ZeroshotCLIP, zsclip.py:42): one template.
    coop_ensemble  CoOp's prompt ensemble (ZeroshotCLIP2, zsclip.py:68-83): the 7 selected ImageNet templates,
                   plus the dataset's hand-crafted prompt except on ImageNet (zsclip.py:82-83).
    clip80         CLIP's 80 ImageNet templates.
    tip_adapter    Tip-Adapter's list for the dataset."""
    if dataset not in COOP_PROMPTS:
        raise KeyError(f"no CoOp prompt for dataset {dataset!r}; known: {', '.join(COOP_PROMPTS)}")
    if which == "coop":
        return (COOP_PROMPTS[dataset],)
    if which == "coop_ensemble":
        extra = () if dataset == "imagenet" else (COOP_PROMPTS[dataset],)
        return CLIP_IMAGENET_TEMPLATES_SELECT + extra
    if which == "clip80":
        return CLIP_IMAGENET_TEMPLATES
    if which == "tip_adapter":
        return TIP_ADAPTER_TEMPLATES[dataset]
    raise KeyError(f"unknown prompt set {which!r}; known: {', '.join(PROMPT_SETS)}")
