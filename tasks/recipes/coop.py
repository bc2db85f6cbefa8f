"""CoOp's recipe (Zhou et al. 2022, arXiv:2109.01134), from KaiyangZhou/CoOp at its stored commit, on Dassl
(KaiyangZhou/Dassl.pytorch): the few-shot rows of CoOp's tables with CLIP ViT-B/16, as scripts/coop/main.sh runs
train.py with configs/trainers/CoOp/vit_b16*.yaml and DATASET.NUM_SHOTS. Line numbers are of those files.
Dassl's defaults (dassl/config/defaults.py) fill what CoOp's configs leave unset."""
from petlbench.recipe import RECIPES, Cited as C, Recipe

REPO = "KaiyangZhou/CoOp@ff61507"
CFG = "configs/trainers/CoOp/vit_b16.yaml"
DASSL = "Dassl.pytorch@c61a1b5 dassl/config/defaults.py"

PROTOCOL = dict(
    backbone=C("openclip:ViT-B-16", f"{CFG}:29 MODEL.BACKBONE.NAME 'ViT-B/16' (OpenAI's CLIP)"),
    weights=C("openai", f"{CFG}:29 OpenAI's released ViT-B/16 (clip.load); open_clip's tag 'openai' is that file"),
    drop_path=C(0.0, "clip/model.py:167-223 ResidualAttentionBlock / VisionTransformer: no drop path"),
    batch_size=C(32, f"{CFG}:3 DATALOADER.TRAIN_X.BATCH_SIZE 32"),
    optimizer=C("sgd", f"{CFG}:16 OPTIM.NAME 'sgd'"),
    lr=C(0.002, f"{CFG}:17 OPTIM.LR 0.002"),
    momentum=C(0.9, f"{DASSL}:154 OPTIM.MOMENTUM 0.9"),
    weight_decay=C(5e-4, f"{DASSL}:153 OPTIM.WEIGHT_DECAY 5e-4"),
    decay_filter=C("all", "trainers/coop.py:246 build_optimizer(self.model.prompt_learner, cfg.OPTIM): one "
                          "group, the context"),
    epochs=C(200, f"{CFG}:18 OPTIM.MAX_EPOCH 200 (8 and 16 shots; COOP.md: vit_b16_ep50 for 1 shot, "
                  "vit_b16_ep100 for 2 and 4, ep50 for every ImageNet setting)"),
    schedule=C("dassl_cosine", f"{CFG}:19-21 LR_SCHEDULER 'cosine', WARMUP_TYPE 'constant' (Dassl "
                               "lr_scheduler.py@27eb2f4:103-115)"),
    warmup_epochs=C(1, f"{CFG}:20 OPTIM.WARMUP_EPOCH 1"),
    warmup_lr=C(1e-5, f"{CFG}:22 OPTIM.WARMUP_CONS_LR 1e-5"),
    min_lr=C(0.0, "torch CosineAnnealingLR's eta_min default 0 (Dassl lr_scheduler.py@27eb2f4:103-106)"),
    img_size=C(224, f"{CFG}:9 INPUT.SIZE (224, 224)"),
    interpolation=C("bicubic", f"{CFG}:10 INPUT.INTERPOLATION 'bicubic'"),
    normalize=C("model", f"{CFG}:11-12 PIXEL_MEAN / PIXEL_STD: CLIP's"),
    augment=C("crop_flip", f"{CFG}:13 INPUT.TRANSFORMS random_resized_crop, random_flip, normalize"),
    randaugment=C("", f"{CFG}:13 no RandAugment"),
    label_smoothing=C(0.0, "trainers/coop.py:266, :273 F.cross_entropy(output, label)"),
    test_crop_pct=C(1.0, "Dassl transforms.py build_transform test: Resize(224) of the shorter side + "
                         "CenterCrop(224), 1.0 here: see deviations"),
    selection=C("final", f"{DASSL}:216 TEST.FINAL_MODEL 'last_step': the last epoch's model is tested once "
                         "(trainers/coop.py:246-248 registers no selection)"),
    eval_every=C(1, f"{DASSL} TEST.EVAL_FREQ (the final test is the one reported)"),
    seed=C(1, "scripts/coop/main.sh:14 for SEED in 1 2 3"),
)

RECIPES.add(Recipe(
    name="coop",
    summary="CoOp's few-shot CLIP recipe: SGD 0.002, Dassl's cosine with a 1-epoch constant warm-up at 1e-5, "
            "batch 32, random resized crop + flip, the last epoch tested once",
    repo=REPO, benchmarks=("coop",),
    protocol=PROTOCOL,
    # the baseline row: zero-shot CLIP with the dataset's hand-crafted prompt (CoOp's ZeroshotCLIP trainer)
    method_protocol={"zeroshot": {"head_templates": C("coop", "trainers/zsclip.py:42-43 CUSTOM_TEMPLATES[dataset]"
                                                              ".format(classname with '_' -> ' ')")}},
    per_task={"coop/imagenet": {"epochs": C(50, "COOP.md:13 for ImageNet, *_ep50.yaml for all settings")}},
    deviations=(
        "Precision: CoOp trains in fp16 (train.py:94 TRAINER.COOP.PREC 'fp16', trainers/coop.py:229); petlbench "
        "trains in fp32 unless amp=fp16 is given (a run with amp=fp16 is labelled so).",
        "Test transform: Dassl resizes the shorter side to 224 and centre-crops; petlbench's test transform resizes "
        "to a square (test_crop_pct=1.0).",
        "CLIP's weights come through open_clip (tag 'openai', QuickGELU), not OpenAI's `clip` package: the same "
        "released file.",
    ),
))
