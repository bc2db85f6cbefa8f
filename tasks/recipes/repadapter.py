"""RepAdapter's recipes (Luo et al. 2023, arXiv:2302.08106), from luogen1996/RepAdapter at commit 360992f:
train.py (optimizer, schedule, loss, evaluation) and dataset.py (transforms, loaders). Line numbers are of that
commit."""
from petlbench.recipe import RECIPES, Cited as C, Recipe

REPO = "luogen1996/RepAdapter@360992fc2a36f069fd168754f14bc1986d869a8f"

COMMON = dict(
    backbone=C("vit_base_patch16_224", "train.py:75 --model default vit_base_patch16_224_in21k"),
    weights=C("vit_base_patch16_224.orig_in21k", "train.py:95 checkpoint_path='./ViT-B_16.npz' (Google IN-21k)"),
    drop_path=C(0.1, "train.py:95 drop_path_rate=0.1"),
    epochs=C(100, "train.py:145 epoch=100; train.py:134 t_initial=100"),
    batch_size=C(64, "dataset.py:64 get_data(batch_size=64)"),
    drop_last=C(True, "dataset.py:102 DataLoader(..., drop_last=True)"),
    optimizer=C("adamw", "train.py:133 AdamW(trainable, lr=args.lr, weight_decay=args.wd)"),
    lr=C(1e-3, "train.py:73 --lr default 1e-3"),
    weight_decay=C(1e-4, "train.py:74 --wd default 1e-4"),
    decay_filter=C("all", "train.py:133 one group: every trainable tensor decays"),
    schedule=C("timm_epoch", "train.py:134-135 CosineLRScheduler; train.py:45-46 scheduler.step(ep) after each epoch"),
    warmup_epochs=C(10, "train.py:135 warmup_t=10"),
    warmup_lr=C(1e-6, "train.py:135 warmup_lr_init=1e-6"),
    min_lr=C(1e-5, "train.py:135 lr_min=1e-5"),
    img_size=C(224, "dataset.py:91 Resize((224, 224))"),
    interpolation=C("bicubic", "dataset.py:91 interpolation=3 (PIL bicubic)"),
    normalize=C("imagenet", "dataset.py:64 mean/std defaults, dataset.py:93 Normalize"),
    test_crop_pct=C(1.0, "dataset.py:95 val_transform: Resize((224, 224)), no crop"),
    eval_every=C(10, "train.py:47 if ep % 10 == 9"),
    eval_phase=C("end", "train.py:47 ep % 10 == 9: after epochs 10, 20, ..., 100"),
    selection=C("reproduction", "train.py:47-50 the best test accuracy over the evaluations is kept"),
    seed=C(42, "train.py:72 --seed default 42"),
)
METHODS = {
    "repadapter": {
        "dim": C(8, "train.py:79 --dim default 8"),
        "groups": C(2, "repadapter.py:154 groups=2"),
        "dropout": C(0.1, "repadapter.py:160 nn.Dropout(0.1)"),
    },
}

RECIPES.add(Recipe(
    name="repadapter-vtab",
    summary="RepAdapter's VTAB-1k runs: AdamW 1e-3, wd 1e-4 on every tensor, timm cosine stepped per epoch, "
            "no augmentation, plain 224 resize, best of 10 test evaluations",
    repo=REPO, benchmarks=("vtab",),
    protocol=dict(
        COMMON,
        label_smoothing=C(0.0, "train.py:142-144 criterion = CrossEntropyLoss() unless --few-shot"),
        mixup=C(0.0, "train.py:143 mixup_fn=None unless --few-shot"),
        cutmix=C(0.0, "train.py:143 mixup_fn=None unless --few-shot"),
        randaugment=C("", "dataset.py:90-93 train_transform: Resize + ToTensor + Normalize"),
        random_erasing=C(0.0, "dataset.py:90-93 no erasing"),
        train_split=C("train800val200", "dataset.py:86 trainval_flist train800val200.txt (get_data(evaluate=True))"),
        test_split=C("test", "dataset.py:89 test_flist test.txt"),
    ),
    methods=METHODS,
    deviations=(
        "timm: RepAdapter's repository pins no version; petlbench runs the installed timm (>= 1.0.9). The pieces "
        "the recipe uses (CosineLRScheduler, the ViT and its .npz loader) compute the same here; the ViT-B "
        "IN-21k model of timm >= 0.4.10 has no pre-logits layer, and petlbench's has none either.",
        "Seed: one run with seed 42 (train.py:72) as the paper; petlbench seeds Python, NumPy and torch but does "
        "not set cudnn.deterministic (utils.py set_seed does), so GPU runs are not bitwise repeatable.",
    ),
))

RECIPES.add(Recipe(
    name="repadapter-fewshot",
    summary="RepAdapter's few-shot runs: the VTAB optimizer and schedule with timm create_transform "
            "(rand-m9-mstd0.5-inc1, erasing 0.25), Mixup 0.8 / CutMix 1.0 with smoothing 0.1, plain 224 test resize",
    repo=REPO, benchmarks=("fewshot", "domain"),
    protocol=dict(
        COMMON,
        augment=C("timm", "dataset.py:72-81 create_transform(...)"),
        color_jitter=C(0.4, "dataset.py:75 color_jitter=0.4 (ignored by timm with auto_augment set)"),
        randaugment=C("rand-m9-mstd0.5-inc1", "dataset.py:76 auto_augment"),
        interpolation=C("bicubic", "dataset.py:77 interpolation='bicubic'"),
        random_erasing=C(0.25, "dataset.py:78 re_prob=0.25"),
        re_mode=C("pixel", "dataset.py:79 re_mode='pixel'"),
        re_count=C(1, "dataset.py:80 re_count=1"),
        mixup=C(0.8, "train.py:138 mixup_alpha=0.8"),
        cutmix=C(1.0, "train.py:138 cutmix_alpha=1.0"),
        label_smoothing=C(0.1, "train.py:140 Mixup(label_smoothing=0.1), train.py:141 SoftTargetCrossEntropy"),
    ),
    methods={"repadapter": dict(METHODS["repadapter"], scale=C(1.0, "configs/repblock_few_shot/*.yaml scale: 1"))},
    deviations=(
        "RepAdapter's get_data never receives --shots (train.py:105 calls get_data(args.dataset, "
        "few_shot=args.few_shot)), so its script always reads shot 1, seed 1, and its test list path lacks a '/' "
        "(dataset.py:70); petlbench reads the split the task names.",
    ),
))
