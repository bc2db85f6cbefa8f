"""Convpass's recipes (Jie & Deng 2022, arXiv:2207.07039), from JieShibo/PETL-ViT at commit 026e4f1: the VTAB-1k
rows of Convpass and Convpass-attn (convpass/README.md:46-47, :53-54, :60-61), as convpass/vtab/run.sh runs
convpass/vtab/train.py with convpass/vtab/vtab.py's loaders and the per-dataset scale s and conv init of
convpass/vtab/configs/<method>/<dataset>.yaml, on timm 0.4.12 (convpass/README.md:16). Line numbers are of that
commit; paths below are relative to convpass/vtab/."""
from petlbench.recipe import RECIPES, Cited as C, Recipe

REPO = "JieShibo/PETL-ViT@026e4f12cfbe1e46bfb4d3ed5ba09f2d9f83e91e"
T = "train.py"
D = "vtab.py"

PROTOCOL = dict(
    backbone=C("vit_base_patch16_224", f"{T}:59 --model default vit_base_patch16_224_in21k"),
    weights=C("vit_base_patch16_224.orig_in21k", f"{T}:66 checkpoint_path='../ViT-B_16.npz'; convpass/README.md:26 "
                                                 "imagenet21k/ViT-B_16.npz (Google IN-21k)"),
    drop_path=C(0.1, f"{T}:66 drop_path_rate=0.1"),
    epochs=C(100, f"{T}:86 train(..., epoch=100); {T}:84 t_initial=100"),
    batch_size=C(64, f"{D}:50 get_data(batch_size=64)"),
    drop_last=C(True, f"{D}:60 DataLoader(..., drop_last=True)"),
    optimizer=C("adamw", f"{T}:83 AdamW(trainable, lr=args.lr, weight_decay=args.wd)"),
    lr=C(1e-3, f"{T}:57 --lr default 1e-3 (run.sh:3, :8 pass none)"),
    weight_decay=C(1e-4, f"{T}:58 --wd default 1e-4"),
    decay_filter=C("all", f"{T}:83 one group: every trainable tensor decays"),
    schedule=C("timm_epoch", f"{T}:84-85 CosineLRScheduler; {T}:29-30 scheduler.step(ep) after each epoch"),
    warmup_epochs=C(10, f"{T}:85 warmup_t=10"),
    warmup_lr=C(1e-6, f"{T}:85 warmup_lr_init=1e-6"),
    min_lr=C(1e-5, f"{T}:85 lr_min=1e-5"),
    label_smoothing=C(0.0, f"{T}:25 F.cross_entropy(out, y)"),
    mixup=C(0.0, f"{T}:22-25 no mixing"),
    cutmix=C(0.0, f"{T}:22-25 no mixing"),
    randaugment=C("", f"{D}:52-55 the one transform: Resize + ToTensor + Normalize"),
    random_erasing=C(0.0, f"{D}:52-55 no erasing"),
    img_size=C(224, f"{D}:53 Resize((224, 224))"),
    interpolation=C("bicubic", f"{D}:53 interpolation=3 (PIL bicubic)"),
    normalize=C("imagenet", f"{D}:55 Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])"),
    test_crop_pct=C(1.0, f"{D}:63-65 the test loader uses the same transform: Resize((224, 224)), no crop"),
    eval_every=C(10, f"{T}:31 if ep % 10 == 9"),
    eval_phase=C("end", f"{T}:31 ep % 10 == 9: after epochs 10, 20, ..., 100"),
    selection=C("reproduction", f"{T}:32-35 the best test accuracy over the evaluations is kept; {T}:87"),
    train_split=C("train800val200", f"{D}:58 train800val200.txt (get_data(name), evaluate=True)"),
    test_split=C("test", f"{D}:64 test.txt"),
    seed=C(42, f"{T}:56 --seed default 42"),
)

# (scale, xavier_init) per dataset: configs/<method>/<task>.yaml, scale at line 3, xavier_init at line 4.
SETTINGS = {
    "convpass": {
        "cifar": (0.1, False), "caltech101": (1.0, False), "dtd": (0.01, True), "oxford_flowers102": (0.1, True),
        "oxford_iiit_pet": (1.0, True), "svhn": (100.0, True), "sun397": (0.1, False),
        "patch_camelyon": (10.0, False), "eurosat": (10.0, False), "resisc45": (10.0, False),
        "diabetic_retinopathy": (1.0, False), "clevr_count": (1.0, False), "clevr_dist": (0.1, True),
        "dmlab": (10.0, False), "kitti": (10.0, True), "dsprites_loc": (100.0, True), "dsprites_ori": (0.1, True),
        "smallnorb_azi": (100.0, True), "smallnorb_ele": (1.0, True),
    },
    "convpass_attn": {
        "cifar": (0.1, True), "caltech101": (100.0, True), "dtd": (0.1, True), "oxford_flowers102": (1.0, True),
        "oxford_iiit_pet": (1.0, True), "svhn": (100.0, True), "sun397": (0.1, True),
        "patch_camelyon": (10.0, True), "eurosat": (10.0, True), "resisc45": (100.0, True),
        "diabetic_retinopathy": (0.1, True), "clevr_count": (10.0, True), "clevr_dist": (1.0, True),
        "dmlab": (10.0, True), "kitti": (10.0, True), "dsprites_loc": (10.0, True), "dsprites_ori": (1.0, True),
        "smallnorb_azi": (100.0, True), "smallnorb_ele": (1.0, True),
    },
}


def _per_task(method: str) -> dict[str, dict[str, C]]:
    return {f"vtab/{t}": {"convpass.scale": C(s, f"configs/{method}/{t}.yaml:3 scale: {s:g}"),
                          "convpass.xavier_init": C(x, f"configs/{method}/{t}.yaml:4 xavier_init: {x}")}
            for t, (s, x) in SETTINGS[method].items()}


def _methods(where: str, run_line: str) -> dict[str, dict[str, C]]:
    return {"convpass": {
        "where": C(where, run_line),
        "dim": C(8, f"{T}:69 set_Convpass(model, args.method, dim=8, ...)"),
        "dropout": C(0.1, "convpass.py:126 nn.Dropout(0.1)"),
    }}


DEVIATIONS = (
    "The bypass wraps each block's attention / MLP, so it shares the branch's drop-path mask; train.py's blocks "
    "(convpass.py:8-9) drop the bypass with an independent mask of the same rate 0.1. Eval outputs are the same.",
    "Evaluation uses the task's test split; train.py evaluates the global `test_dl` (the same split).",
)

for name, method, where, line in (("convpass-vtab", "convpass", "attn_mlp", "run.sh:3 --method convpass"),
                                  ("convpass-attn-vtab", "convpass_attn", "attn", "run.sh:8 --method convpass_attn")):
    RECIPES.add(Recipe(
        name=name,
        summary=f"{'Convpass' if where == 'attn_mlp' else 'Convpass-attn'}'s VTAB-1k runs: AdamW 1e-3, wd 1e-4 on "
                "every tensor, timm cosine stepped per epoch, no augmentation, plain bicubic 224 resize, best of 10 "
                "test evaluations, seed 42; scale s and conv init per dataset",
        repo=REPO, benchmarks=("vtab",),
        protocol=PROTOCOL,
        methods=_methods(where, line),
        per_task=_per_task(method),
        deviations=DEVIATIONS,
    ))
