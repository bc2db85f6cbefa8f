"""NOAH's recipes (Zhang et al. 2022, arXiv:2206.04673), from ZhangYuanhan-AI/NOAH at commit e9c55f3: the
VTAB-1k, few-shot and domain-generalization baselines (LoRA, Adapter, VPT) of NOAH's tables, as its slurm scripts
launch supernet_train_prompt.py ("train.py" below) with timm 0.5.4 (requirements.txt:2). Line numbers are of
that commit; the scripts are configs/{LoRA,Adapter,VPT}/{VTAB,few-shot,domain-generalization}/*.sh."""
from petlbench.recipe import RECIPES, Cited as C, Recipe

REPO = "ZhangYuanhan-AI/NOAH@e9c55f360be4f7f1133a08bf84f86f0309e98f8c"
T = "supernet_train_prompt.py"
VIT = "model/supernet_vision_transformer_timm.py"

COMMON = dict(
    backbone=C("vit_base_patch16_224", "experiments/LoRA/ViT-B_prompt_lora_8.yaml:1 vit_base_patch16_224_in21k"),
    weights=C("vit_base_patch16_224.orig_in21k", "scripts --resume=${CKPT}; README.md:67 ViT-B_16.npz (IN-21k)"),
    drop_path=C(0.1, f"{T}:59 --drop-path default 0.1"),
    epochs=C(100, "scripts --epochs=100"),
    batch_size=C(64, "scripts --batch-size=64"),
    drop_last=C(True, f"{T}:280 drop_last=True"),
    optimizer=C("adamw", f"{T}:74 --opt default 'adamw'"),
    weight_decay=C(1e-4, "scripts WEIGHT_DECAY=0.0001"),
    decay_filter=C("timm", f"{T}:365 create_optimizer(args, model): timm 0.5.4 filter_bias_and_bn=True"),
    schedule=C("timm_epoch", f"{T}:367 create_scheduler(args, optimizer); {T}:414 lr_scheduler.step(epoch)"),
    warmup_epochs=C(10, f"{T}:107 --warmup-epochs default 10"),
    warmup_lr=C(1e-6, f"{T}:98 --warmup-lr default 1e-6"),
    min_lr=C(1e-5, f"{T}:100 --min-lr default 1e-5"),
    img_size=C(224, f"{T}:54 --input-size default 224"),
    interpolation=C("bicubic", "lib/datasets.py:233 Resize(..., interpolation=3)"),
    normalize=C("imagenet", "lib/datasets.py:241 Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)"),
    eval_every=C(10, f"{T}:205 --val_interval default 10"),
    eval_phase=C("start", f"{T}:427 epoch % args.val_interval == 0 or epoch == args.epochs-1 (0-based)"),
    selection=C("reproduction", f"{T}:430 max_accuracy = max(max_accuracy, test acc1)"),
    seed=C(0, f"{T}:170 --seed default 0 (the scripts pass none)"),
)

TIMM_VERSION = ("timm: NOAH ran timm 0.5.4 (requirements.txt:2); petlbench runs the installed timm (>= 1.0.9). "
                "create_transform, RandAugment's rand-m9-mstd0.5-inc1 op set, Mixup and RandomErasing take the "
                "same arguments; DropPath draws its mask as bernoulli_ where 0.5.4 used floor(keep + rand) (same "
                "distribution, other draws). NOAH's ViT-B IN-21k has no pre-logits layer ("
                + VIT + ":1073-1080), nor has petlbench's.")

# The baselines as NOAH's model builds them (LoRA and Adapter are re-initialised by the ViT's weight init).
METHODS = {
    "lora": {
        "rank": C(8, "experiments/LoRA/ViT-B_prompt_lora_8.yaml LORA_DIM: 8"),
        "alpha": C(8.0, f"{VIT}:278-279 delta = LoRA_b(LoRA_a(drop(x))), no scaling (alpha / r = 1)"),
        "targets": C("qkv", f"{VIT}:227 LoRA_b: Linear(r, dim * 3): q, k and v"),
        "fused": C(True, f"{VIT}:225-227 one LoRA_a (r x d) and one LoRA_b (3d x r)"),
        "init": C("trunc_normal", f"{VIT}:462 init_weights -> :531 self.apply(_init_vit_weights) -> :686 "
                                  "trunc_normal_(std=.02) on LoRA_a and LoRA_b"),
        "dropout": C(0.1, f"{T}:207 --drop_rate_LoRA default 0.1"),
    },
    "adapter": {
        "dim": C(8, "experiments/Adapter/ViT-B_prompt_adapter_8.yaml ADAPTER_DIM: 8"),
        "act": C("quickgelu", "model/module/adapter_super.py:8-10,33 QuickGELU"),
        "dropout": C(0.1, f"{T}:209 --drop_rate_adapter default 0.1 (adapter_super.py:70, after the activation)"),
        "scale": C(1.0, "model/module/adapter_super.py:67-74 identity + ln2(...), no scale"),
        "init": C("trunc_normal", f"{VIT}:531 self.apply(_init_vit_weights) re-draws ln1 / ln2: trunc_normal_(.02), "
                                  "zero bias"),
        "placement": C("after_drop_path", f"{VIT}:365 x + self.adapter(self.drop_path(self.mlp(self.norm2(x))))"),
    },
    "vpt": {
        "dropout": C(0.1, f"{T}:208 --drop_rate_prompt default 0.1; configs/VPT/VTAB/*.sh --drop_rate_prompt=0.1"),
    },
}

# NOAH itself (methods/noah.py): the search space its VTAB-1k sub-networks come from. The VTAB scripts name
# experiments/NOAH/supernet/supernet-B_prompt.yaml (dims 5, 10, 50, 100), but every sub-network NOAH released for
# VTAB-1k (experiments/NOAH/subnet/VTAB/*.yaml RETRAIN) uses only 1, 5 and 10: the dims of
# supernet-B_prompt_VTAB.yaml, the space taken here. Few-shot sub-networks use 5, 10, 50, 100 (supernet-B_prompt.yaml,
# the method's defaults).
SPACE_VTAB = "experiments/NOAH/supernet/supernet-B_prompt_VTAB.yaml"
NOAH_VTAB = {"noah": {
    "prompt_dims": C("1,5,10", f"{SPACE_VTAB}:10-13 SEARCH_SPACE.VISUAL_PROMPT_DIM"),
    "lora_dims": C("1,5,10", f"{SPACE_VTAB}:14-17 SEARCH_SPACE.LORA_DIM"),
    "adapter_dims": C("1,5,10", f"{SPACE_VTAB}:18-21 SEARCH_SPACE.ADAPTER_DIM"),
}}

# vtab/<ours>: (NOAH's dataset name, prompt dims, LoRA dims, adapter dims), from
# experiments/NOAH/subnet/VTAB/ViT-B_prompt_<NOAH's name>.yaml RETRAIN (PREFIX_DIM all 0 in every file)
SUBNETS = {
    "cifar": ("cifar100", "10,5,10,1,5,1,10,1,10,5,1,10",
        "10,1,5,5,1,10,1,1,1,10,1,1", "5,10,10,10,5,1,1,1,10,10,10,1"),
    "caltech101": ("caltech101", "5,10,1,5,10,1,10,1,10,1,10,1",
        "1,10,10,10,5,10,10,10,5,1,10,1", "10,1,5,10,10,1,5,5,10,1,5,10"),
    "dtd": ("dtd", "10,5,1,1,5,10,5,1,1,5,1,1",
        "10,5,1,1,5,10,5,1,1,5,1,1", "1,1,1,10,1,1,10,10,10,10,10,1"),
    "oxford_flowers102": ("oxford_flowers102", "10,10,5,5,1,10,1,5,10,1,5,10",
        "10,10,5,5,1,10,1,5,10,1,5,10", "5,1,5,5,1,1,10,5,5,10,5,10"),
    "oxford_iiit_pet": ("oxford_pet", "10,5,5,10,1,10,10,10,10,5,10,10",
        "10,1,1,10,5,1,1,5,10,10,1,10", "1,5,5,5,5,10,1,5,10,1,1,5"),
    "svhn": ("svhn", "10,5,5,10,5,5,5,5,5,5,5,5",
        "5,5,5,10,5,5,5,10,10,10,10,5", "5,5,5,5,5,10,5,10,5,5,5,5"),
    "sun397": ("sun397", "5,1,10,5,5,10,1,5,1,1,1,1",
        "10,10,5,5,1,1,10,1,1,1,1,10", "10,5,1,1,1,10,5,5,1,1,5,1"),
    "patch_camelyon": ("patch_camelyon", "10,10,5,10,1,10,10,10,5,1,5,5",
        "10,10,1,10,1,1,5,5,5,1,5,5", "5,1,10,5,5,1,1,10,1,5,1,5"),
    "eurosat": ("eurosat", "10,10,10,10,10,1,5,5,10,10,5,10",
        "10,1,10,10,1,5,10,1,1,1,10,1", "10,10,5,1,10,1,10,5,10,1,10,10"),
    "resisc45": ("resisc45", "5,5,10,1,5,1,5,10,1,1,5,1",
        "10,10,5,5,5,10,10,10,1,5,1,5", "5,5,5,1,5,1,10,5,5,1,5,5"),
    "diabetic_retinopathy": ("diabetic_retinopathy", "10,1,5,10,1,5,5,10,5,10,5,5",
        "1,1,10,5,5,10,1,10,10,5,10,1", "1,1,5,5,10,10,10,5,1,10,10,1"),
    "clevr_count": ("clevr_count", "10,1,5,10,5,1,10,5,5,5,10,1",
        "1,1,10,5,10,10,10,1,5,1,10,1", "1,10,10,10,10,1,5,10,10,10,1,1"),
    "clevr_dist": ("clevr_dist", "10,1,1,10,5,10,5,1,5,10,5,5",
        "5,1,10,5,10,10,1,1,5,10,1,10", "1,1,1,10,1,1,1,10,5,1,10,10"),
    "dmlab": ("dmlab", "1,10,5,1,10,10,5,10,10,1,1,1",
        "10,5,1,5,10,10,5,5,5,10,10,1", "5,1,5,1,5,1,5,5,5,10,10,10"),
    "kitti": ("kitti", "1,5,10,1,10,5,1,1,1,5,5,5",
        "5,10,10,10,1,10,5,5,10,5,10,1", "5,1,10,10,1,10,1,1,5,10,5,5"),
    "dsprites_loc": ("dsprites_loc", "5,10,1,10,10,5,5,1,5,5,10,1",
        "1,1,1,1,10,10,1,10,5,1,5,10", "1,1,1,10,1,1,10,10,10,10,10,1"),
    "dsprites_ori": ("dsprites_ori", "5,5,1,1,10,5,1,10,10,10,10,10",
        "1,10,1,10,1,5,10,10,5,5,1,5", "1,10,10,10,10,1,5,10,10,10,1,1"),
    "smallnorb_azi": ("smallnorb_azi", "1,10,1,10,1,5,10,10,1,10,10,5",
        "10,5,1,5,1,1,5,5,10,1,1,10", "5,1,1,1,5,5,1,10,1,1,5,1"),
    "smallnorb_ele": ("smallnorb_ele", "10,1,1,1,1,5,10,10,10,10,1,10",
        "10,1,1,1,5,5,10,5,1,10,1,1", "1,1,1,10,1,1,10,10,10,10,10,1"),
}


RECIPES.add(Recipe(
    name="noah-vtab",
    summary="NOAH's VTAB-1k baselines: AdamW 1e-3, wd 1e-4 with timm's bias / 1-D filter, timm cosine stepped per "
            "epoch, no augmentation, direct 224 resize, best of 11 test evaluations (epochs 1, 11, ..., 91, 100)",
    repo=REPO, benchmarks=("vtab",),
    protocol=dict(
        COMMON,
        lr=C(1e-3, "configs/{LoRA,Adapter,VPT}/VTAB/*.sh LR in 0.001"),
        label_smoothing=C(0.0, "VTAB scripts --smoothing=0"),
        mixup=C(0.0, "VTAB scripts --mixup=0"),
        cutmix=C(0.0, "VTAB scripts --cutmix=0"),
        randaugment=C("", "VTAB scripts --no_aug (lib/datasets.py:213)"),
        random_erasing=C(0.0, "VTAB scripts --no_aug (lib/datasets.py:213)"),
        test_crop_pct=C(1.0, "VTAB scripts --direct_resize (lib/datasets.py:227-228)"),
        train_split=C("train800val200",
                      "lib/datasets.py:21-26 train800val200.txt for the baselines (is_individual_prompt)"),
        test_split=C("test", "lib/datasets.py:29 test.txt"),
    ),
    methods={**METHODS, **NOAH_VTAB},
    method_protocol={"vpt": {"normalize": C("inception", "configs/VPT/VTAB/slurm_train_vpt_vtab.sh --inception "
                                                         "(lib/datasets.py:238-239)")}},
    deviations=(
        TIMM_VERSION,
        "NOAH's VPT appends its prompts after the patch tokens (" + VIT + ":361-363) and draws them with "
        "xavier_uniform over (1, P, D); petlbench's VPT inserts them after the prefix tokens (the same function: "
        "prompts carry no position embedding) with VPT's own init. NOAH's per-dataset prompt lengths come with "
        "its launch configs (CONFIG=$1) and are not in the repository: set vpt.tokens per run.",
    ),
))

FEWSHOT = dict(
    COMMON,
    lr=C(5e-3, "configs/{LoRA,Adapter,VPT}/few-shot/*.sh LR in 0.005"),
    augment=C("timm", "lib/datasets.py:213-223 create_transform(is_training=True, ...)"),
    color_jitter=C(0.4, f"{T}:117 --color-jitter default 0.4 (ignored by timm with auto_augment set)"),
    randaugment=C("rand-m9-mstd0.5-inc1", f"{T}:119 --aa default"),
    random_erasing=C(0.25, f"{T}:133 --reprob default 0.25"),
    re_mode=C("pixel", f"{T}:135 --remode default 'pixel'"),
    re_count=C(1, f"{T}:137 --recount default 1"),
    mixup=C(0.8, f"{T}:143 --mixup default 0.8"),
    cutmix=C(1.0, f"{T}:145 --cutmix default 1.0"),
    label_smoothing=C(0.1, f"{T}:122 --smoothing default 0.1, through Mixup ({T}:294); "
                           "SoftTargetCrossEntropy :370-372"),
    test_crop_pct=C(224 / 256, "few-shot scripts pass no --direct_resize: lib/datasets.py:230-235 "
                               "Resize((256, 256)) + CenterCrop(224)"),
)

RECIPES.add(Recipe(
    name="noah-fewshot",
    summary="NOAH's few-shot baselines: AdamW 5e-3, timm create_transform (rand-m9-mstd0.5-inc1, erasing 0.25), "
            "Mixup 0.8 / CutMix 1.0, smoothing 0.1, test Resize(256) + CenterCrop(224)",
    repo=REPO, benchmarks=("fewshot",),
    protocol=FEWSHOT, methods=METHODS,
    deviations=(
        TIMM_VERSION,
        f"Seeds: NOAH trains every split seed with --seed 0 ({T}:170) and varies only --few-shot-seed; "
        "tasks/sweeps/fewshot.yaml sets the training seed to the split seed (seed=s with "
        "train_shot<k>_seed<s>); pass seed=0 to train as NOAH did.",
        "Erasing runs on the normalised batch on the device (timm's prefetcher path) instead of per image in "
        "the loader: the same operation and distribution (tests/test_recipes.py compares them image by image).",
    ),
))

RECIPES.add(Recipe(
    name="noah-domain",
    summary="NOAH's domain-generalization baselines: its few-shot recipe on 16-shot ImageNet, evaluated unchanged "
            "on ImageNet-V2 / -Sketch / -A / -R",
    repo=REPO, benchmarks=("domain",),
    protocol=FEWSHOT, methods=METHODS,
    deviations=(
        TIMM_VERSION,
        "ImageNet-A and -R are scored on their 200 classes (their authors' eval.py); NOAH took a 1000-way argmax.",
    ),
))


# --- NOAH's own three stages (petlbench/nas.py) --------------------------------------------------------------
# The retrain of a found sub-network is the baselines' recipe (noah-vtab / noah-fewshot): configs/NOAH/VTAB/subnet/
# slurm_retrain_vtab.sh:33 passes --epochs=100 --lr=0.001 --weight-decay=0.0001 --no_aug --direct_resize
# --mixup=0 --cutmix=0 --smoothing=0 --mode=retrain (train800val200, lib/datasets.py:26; test.txt, :29), and
# configs/NOAH/few-shot/subnet/slurm_retrain_few-shot.sh:38 the few-shot baselines' arguments with lr 0.005.
SUPER_VTAB = "configs/NOAH/VTAB/supernet/slurm_train_vtab.sh:34"
SUPER_FS = "configs/NOAH/few-shot/supernet/slurm_train_few-shot.sh:38"
SUPERNET_STAGE = dict(
    selection=C("trial", "the supernet's weights are the last epoch's (train.py:416-424 checkpoint.pth, written every "
                         "epoch; evolution.py --resume reads it); NOAH's periodic test evaluation of a random "
                         "sub-network (train.py:427-431) is a log line: petlbench evaluates val, never test"),
    eval_every=C(10, f"{T}:205 --val_interval default 10"),
)

RECIPES.add(Recipe(
    name="noah-vtab-supernet",
    summary="NOAH's VTAB-1k supernet: AdamW 5e-4, wd 1e-4, 500 epochs on train800, a random sub-network per step",
    repo=REPO, benchmarks=("vtab",),
    protocol=dict(
        RECIPES.get("noah-vtab").protocol, **SUPERNET_STAGE,
        lr=C(5e-4, f"{SUPER_VTAB} --lr=${{LR}}, :21 LR in 0.0005"),
        epochs=C(500, f"{SUPER_VTAB} --epochs=500"),
        weight_decay=C(1e-4, f"{SUPER_VTAB} --weight-decay=${{WEIGHT_DECAY}}, :11 WEIGHT_DECAY=0.0001"),
        clean_train_split=C("train800", "lib/datasets.py:21-22 mode 'super': train800.txt"),
        val_split=C("val200", "lib/datasets.py:23-24 mode 'search': val200.txt (evolution.py's candidates)"),
    ),
    methods={**METHODS, **NOAH_VTAB},
    deviations=(TIMM_VERSION,
                "Sub-networks are drawn with torch's generator (resumable), not python's random seeded per epoch "
                "(supernet_engine_prompt.py:59); the distribution is NOAH's sample_configs."),
))

RECIPES.add(Recipe(
    name="noah-vtab-subnet",
    summary="NOAH's VTAB-1k rows: the sub-network NOAH released per dataset, retrained with its retrain recipe",
    repo=REPO, benchmarks=("vtab",),
    protocol=RECIPES.get("noah-vtab").protocol,
    methods={**METHODS, **NOAH_VTAB},
    per_task={f"vtab/{ours}": {"noah.arch": C(f"prompt={p};lora={lo};adapter={a}",
                                              f"experiments/NOAH/subnet/VTAB/ViT-B_prompt_{theirs}.yaml RETRAIN")}
              for ours, (theirs, p, lo, a) in SUBNETS.items()},
    deviations=RECIPES.get("noah-vtab").deviations,
))


def _fewshot_supernet(name: str, benchmark: str, script: str, lr_line: int, summary: str) -> Recipe:
    """The few-shot-recipe supernet of NOAH's few-shot and domain-generalization scripts (`script`:line passes
    --lr=${LR} --epochs=300 --weight-decay=${WEIGHT_DECAY}; LR in 0.0005 at :`lr_line`)."""
    return Recipe(
        name=name, summary=summary, repo=REPO, benchmarks=(benchmark,),
        protocol=dict(FEWSHOT, **SUPERNET_STAGE,
                      lr=C(5e-4, f"{script} --lr=${{LR}}, :{lr_line} LR in 0.0005"),
                      epochs=C(300, f"{script} --epochs=300"),
                      weight_decay=C(1e-4, f"{script} --weight-decay=${{WEIGHT_DECAY}}")),
        methods=METHODS, deviations=(TIMM_VERSION,))


RECIPES.add(_fewshot_supernet(
    "noah-fewshot-supernet", "fewshot", SUPER_FS, 21,
    "NOAH's few-shot supernet: its few-shot recipe with AdamW 5e-4 for 300 epochs on the k-shot split"))
RECIPES.add(_fewshot_supernet(
    "noah-domain-supernet", "domain", "configs/NOAH/domain-generalization/supernet/slurm_train_imagenet.sh:37", 20,
    "NOAH's domain-generalization supernet: its few-shot supernet recipe on 16-shot ImageNet"))
