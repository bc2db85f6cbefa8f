"""SSF's recipe (Lian et al. 2022, arXiv:2210.08823), from dongzelian/SSF at commit e94e0e7: the VTAB-1k rows of
SSF's Table (ViT-B/16 with AugReg IN-21k weights), as train_scripts/vit/vtab/<dataset>/train_ssf.sh launch
train.py (timm-style, timm 0.6.5 per README.md:34-37) on two GPUs. Line numbers are of that commit; "the scripts"
are train_scripts/vit/vtab/*/train_ssf.sh, whose lines are laid out alike (1 launcher, 3 batch / epochs,
4 optimizer / wd, 5 warm-up, 6 lr / min-lr, 7 drop-path, 8 mixup / cutmix / smoothing, 10 amp / tuning mode)."""
from petlbench.recipe import RECIPES, Cited as C, Recipe

REPO = "dongzelian/SSF@e94e0e704a4ece1986a537c97a95158b46838f71"
S = "train_scripts/vit/vtab/*/train_ssf.sh"
VIT = "models/vision_transformer.py"

PROTOCOL = dict(
    backbone=C("vit_base_patch16_224", f"{S}:2 --model vit_base_patch16_224_in21k"),
    weights=C("vit_base_patch16_224.augreg_in21k", f"{VIT}:121-122 vit_base_patch16_224_in21k url augreg/"
                                                   "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0.npz; "
                                                   f"{S}:10 --pretrained"),
    epochs=C(100, f"{S}:3 --epochs 100"),
    cooldown_epochs=C(10, "train.py:202 --cooldown-epochs default 10 (the scripts pass none); timm 0.6.5 "
                          "scheduler_factory.py:49 num_epochs = t_initial + cooldown_epochs; train.py:684 loops "
                          "over them (log/cifar100.csv: 110 epochs, the last 10 at min_lr)"),
    batch_size=C(64, f"{S}:1 --nproc_per_node=2 processes x {S}:3 --batch-size 32 each"),
    drop_last=C(True, "data/loader.py:257 drop_last=is_training"),
    optimizer=C("adamw", f"{S}:4 --opt adamw; optim_factory.py:372-373 optim.AdamW"),
    decay_filter=C("timm", "train.py:463 create_optimizer_v2 -> optim_factory.py:332-333 "
                           "param_groups_weight_decay: no decay for ndim <= 1, *.bias and no_weight_decay() "
                           "(optim_factory.py:51); SSF's scales / shifts are 1-D, so only head.weight decays"),
    schedule=C("timm_next_epoch", "train.py:522 create_scheduler -> timm 0.6.5 CosineLRScheduler(t_initial=epochs, "
                                  "lr_min, warmup_lr_init, warmup_t) (timm/scheduler/scheduler_factory.py:38-48), "
                                  "t_in_epochs: constant within an epoch; train.py:709 step(epoch + 1)"),
    warmup_epochs=C(10, f"{S}:5 --warmup-epochs 10"),
    warmup_lr=C(1e-7, f"{S}:5 --warmup-lr 1e-7"),
    min_lr=C(1e-8, f"{S}:6 --min-lr 1e-8"),
    label_smoothing=C(0.0, f"{S}:8 --smoothing 0; train.py:634-635 nn.CrossEntropyLoss()"),
    mixup=C(0.0, f"{S}:8 --mixup 0"),
    cutmix=C(0.0, f"{S}:8 --cutmix 0"),
    randaugment=C("", f"{S}:2 --no-aug: data/transforms_factory.py:235-242 transforms_direct_resize"),
    random_erasing=C(0.0, "data/loader.py:267 prefetch_re_prob = 0 with no_aug (train.py:238 --reprob 0.25 unused)"),
    img_size=C(224, f"{S}:7 --img-size 224"),
    interpolation=C("bicubic", f"{VIT}:51 _cfg interpolation 'bicubic'; train.py:569-570 (no_aug) and :610 use "
                               "data_config['interpolation']"),
    normalize=C("inception", f"{VIT}:52 _cfg mean / std IMAGENET_INCEPTION_MEAN / _STD (0.5, 0.5, 0.5); "
                             "train.py:427 resolve_data_config(model=model); data/loader.py:87-88, 110"),
    test_crop_pct=C(1.0, f"{S}:2 --direct-resize: data/transforms_factory.py:272-279, :28-29 "
                         "Resize((224, 224)) + CenterCrop(224) (a no-op)"),
    eval_every=C(1, "train.py:698 validate(model, loader_eval, ...) after every epoch"),
    eval_phase=C("end", "train.py:684-698 after epochs 1, 2, ..."),
    selection=C("reproduction", "train.py:719 saver.save_checkpoint(epoch, metric=test top-1) keeps the best; "
                                "train.py:723-724 '*** Best metric'"),
    train_split=C("train800val200", "data/vtab.py:12 train800val200.txt (train=True, data/dataset_factory.py:162-163)"),
    test_split=C("test", "data/vtab.py:13 test.txt (the eval dataset, train=False)"),
    seed=C(42, "train.py:294 --seed default 42 (the scripts pass none)"),
)

# petlbench task -> (the scripts' folder, --lr (line 6), --weight-decay (line 4), --drop-path (line 7)), as written.
SCRIPTS = {
    "cifar": ("cifar_100", "5e-3", "5e-5", "0"),
    "caltech101": ("caltech101", "1e-3", "5e-2", "0.1"),
    "dtd": ("dtd", "5e-3", "5e-5", "0"),
    "oxford_flowers102": ("flowers102", "5e-3", "5e-5", "0"),
    "oxford_iiit_pet": ("pets", "5e-3", "5e-5", "0"),
    "svhn": ("svhn", "1e-2", "5e-5", "0"),
    "sun397": ("sun397", "5e-3", "5e-5", "0"),
    "patch_camelyon": ("patch_camelyon", "5e-3", "5e-5", "0"),
    "eurosat": ("eurosat", "3e-3", "5e-2", "0.2"),
    "resisc45": ("resisc45", "2e-3", "5e-5", "0.1"),
    "diabetic_retinopathy": ("diabetic_retinopathy", "5e-3", "5e-5", "0.2"),
    "clevr_count": ("clevr_count", "2e-3", "5e-2", "0.1"),
    "clevr_dist": ("clevr_dist", "5e-2", "5e-2", "0.1"),
    "dmlab": ("dmlab", "5e-3", "5e-5", "0.1"),
    "kitti": ("kitti", "1e-2", "5e-5", "0"),
    "dsprites_loc": ("dsprites_loc", "1e-2", "5e-5", "0"),
    "dsprites_ori": ("dsprites_ori", "5e-3", "5e-5", "0.2"),
    "smallnorb_azi": ("smallnorb_azi", "2e-2", "5e-5", "0.1"),
    "smallnorb_ele": ("smallnorb_ele", "5e-3", "5e-2", "0.2"),
}


def _per_task(folder: str, lr: str, wd: str, drop_path: str) -> dict:
    f = f"train_scripts/vit/vtab/{folder}/train_ssf.sh"
    return {"lr": C(float(lr), f"{f}:6 --lr {lr}"),
            "weight_decay": C(float(wd), f"{f}:4 --weight-decay {wd}"),
            "drop_path": C(float(drop_path), f"{f}:7 --drop-path {drop_path}")}


RECIPES.add(Recipe(
    name="ssf-vtab",
    summary="SSF's VTAB-1k runs: AugReg IN-21k ViT-B/16, AdamW with per-dataset lr / wd / drop-path, timm's "
            "filter (only the head weight decays), timm cosine per epoch (warm-up 1e-7, min 1e-8), batch 64, "
            "no augmentation, Inception mean/std, bicubic 224 resize, best test top-1 over every epoch",
    repo=REPO, benchmarks=("vtab",),
    protocol=PROTOCOL,
    per_task={f"vtab/{t}": _per_task(*v) for t, v in SCRIPTS.items()},
    deviations=(
        "Weights: AugReg IN-21k (B_16-i21k-300ep-...-aug_medium1), not Google's original IN-21k ViT-B_16.npz "
        "that the other VTAB rows use, so the row is not strictly comparable.",
        "Data: SSF's own extracted VTAB-1k JPEGs (README.md:54, onedrive) in the same list-file layout "
        "(data/vtab.py:12-13); petlbench reads NOAH's export.",
        "Two processes of 32 (the scripts' line 1, 3): the same global batch of 64 (per-rank shards of one "
        "DistributedSampler permutation); the test split is sharded by OrderedDistributedSampler (padded to an "
        "even count, data/loader.py:239) and per-batch accuracies averaged over ranks (train.py:870-873), where "
        "petlbench counts the exact test accuracy. Seeds are seed + rank (train.py:398).",
        "Mixed precision: the scripts pass --amp (native fp16 autocast + GradScaler, train.py:384-393, 479-481); "
        "petlbench's precision is its execution setting.",
    ),
))
