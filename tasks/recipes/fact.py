"""FacT's recipe (Jie & Deng 2023, arXiv:2212.03145), from JieShibo/PETL-ViT at commit 026e4f1: the VTAB-1k
FacT-TK and FacT-TT rows, as FacT/run.sh runs FacT/fact_tk.py and FacT/fact_tt.py (the same loop) with
FacT/vtab.py's loaders and FacT/configs/{tk,tt}/<dataset>.yaml, on timm 0.4.12 (FacT/README.md:15). Line numbers
are of that commit; the protocol cites fact_tk.py, and fact_tt.py sets the same values at its own lines
(:162 seed, :165-166 lr / wd, :175 model, :195-198 optimizer, schedule, epochs). The methods are `fact_tk` and
`fact_tt`: rank and scale per dataset (FACT_TK, FACT_TT), dropout 0.1 for both."""
from petlbench.recipe import RECIPES, Cited as C, Recipe

REPO = "JieShibo/PETL-ViT@026e4f12cfbe1e46bfb4d3ed5ba09f2d9f83e91e"
T = "FacT/fact_tk.py"
D = "FacT/vtab.py"

PROTOCOL = dict(
    backbone=C("vit_base_patch16_224", f"{T}:175 --model default vit_base_patch16_224_in21k"),
    weights=C("vit_base_patch16_224.orig_in21k", f"{T}:183 checkpoint_path='./ViT-B_16.npz'; FacT/README.md:25 "
                                                 "imagenet21k/ViT-B_16.npz (Google IN-21k)"),
    drop_path=C(0.1, f"{T}:183 drop_path_rate=0.1"),
    epochs=C(100, f"{T}:206 train(..., epoch=100); {T}:204 t_initial=100"),
    batch_size=C(64, f"{D}:76 get_data(batch_size=64)"),
    drop_last=C(True, f"{D}:86 DataLoader(..., drop_last=True)"),
    optimizer=C("adamw", f"{T}:203 AdamW(trainable, lr=args.lr, weight_decay=args.wd)"),
    lr=C(1e-3, f"{T}:173 --lr default 1e-3 (FacT/run.sh:8 passes none)"),
    weight_decay=C(1e-4, f"{T}:174 --wd default 1e-4"),
    decay_filter=C("all", f"{T}:203 one group: every trainable tensor decays"),
    schedule=C("timm_epoch", f"{T}:204-205 CosineLRScheduler; {T}:32-33 scheduler.step(ep) after each epoch"),
    warmup_epochs=C(10, f"{T}:205 warmup_t=10"),
    warmup_lr=C(1e-6, f"{T}:205 warmup_lr_init=1e-6"),
    min_lr=C(1e-5, f"{T}:205 lr_min=1e-5"),
    label_smoothing=C(0.0, f"{T}:28 F.cross_entropy(out, y)"),
    mixup=C(0.0, f"{T}:25-28 no mixing"),
    cutmix=C(0.0, f"{T}:25-28 no mixing"),
    randaugment=C("", f"{D}:78-81 the one transform: Resize + ToTensor + Normalize"),
    random_erasing=C(0.0, f"{D}:78-81 no erasing"),
    img_size=C(224, f"{D}:79 Resize((224, 224))"),
    interpolation=C("bicubic", f"{D}:79 interpolation=3 (PIL bicubic)"),
    normalize=C("imagenet", f"{D}:81 Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])"),
    test_crop_pct=C(1.0, f"{D}:90-91 the test loader uses the same transform: Resize((224, 224)), no crop"),
    eval_every=C(10, f"{T}:34 if ep % 10 == 9"),
    eval_phase=C("end", f"{T}:34 ep % 10 == 9: after epochs 10, 20, ..., 100"),
    selection=C("reproduction", f"{T}:35-38 the best test accuracy over the evaluations is kept; {T}:207"),
    train_split=C("train800val200", f"{D}:84 train800val200.txt (get_data(name), evaluate=True)"),
    test_split=C("test", f"{D}:90 test.txt"),
    seed=C(42, f"{T}:169 --seed default 42"),
)

# FacT's options, the same for every dataset (methods/fact_tk.py, fact_tt.py implement the init and targets) ...
FACT = {
    "dropout": C(0.1, f"{T}:120,130 _.dp = nn.Dropout(0.1) (inside the factorised update)"),
    "init": C("FacTv zero, FacTc / FacTp xavier_uniform, FacTu nn.Linear default",
              f"{T}:109-116 set_FacT"),
    "targets": C("qkv, proj, fc1, fc2", f"{T}:59-104 fact_forward_attn / fact_forward_mlp"),
}
# ... and per dataset (FacT/configs/tk/<task>.yaml: rank at line 3, scale at line 4).
_TK = {
    "cifar": (32, 0.1), "caltech101": (32, 10.0), "dtd": (16, 0.01), "oxford_flowers102": (32, 1.0),
    "oxford_iiit_pet": (16, 10.0), "svhn": (32, 100.0), "sun397": (16, 1.0), "patch_camelyon": (32, 10.0),
    "eurosat": (32, 100.0), "resisc45": (32, 10.0), "diabetic_retinopathy": (16, 1.0), "clevr_count": (32, 10.0),
    "clevr_dist": (16, 10.0), "dmlab": (32, 10.0), "kitti": (32, 10.0), "dsprites_loc": (32, 100.0),
    "dsprites_ori": (32, 1.0), "smallnorb_azi": (32, 100.0), "smallnorb_ele": (16, 10.0),
}
FACT_TK = {
    f"vtab/{t}": {"rank": C(r, f"FacT/configs/tk/{t}.yaml:3 rank: {r}"),
                  "scale": C(s, f"FacT/configs/tk/{t}.yaml:4 scale: {s}")}
    for t, (r, s) in _TK.items()
}
# ... and FacT-TT's (FacT/configs/tt/<task>.yaml: rank at line 3, scale at line 4).
_TT = {
    "cifar": (8, 1.0), "caltech101": (16, 10.0), "dtd": (8, 0.01), "oxford_flowers102": (16, 1.0),
    "oxford_iiit_pet": (8, 1.0), "svhn": (16, 100.0), "sun397": (8, 1.0), "patch_camelyon": (8, 10.0),
    "eurosat": (8, 100.0), "resisc45": (8, 0.1), "diabetic_retinopathy": (8, 1.0), "clevr_count": (16, 1.0),
    "clevr_dist": (4, 10.0), "dmlab": (16, 10.0), "kitti": (16, 10.0), "dsprites_loc": (16, 100.0),
    "dsprites_ori": (16, 1.0), "smallnorb_azi": (16, 100.0), "smallnorb_ele": (8, 10.0),
}
FACT_TT = {
    f"vtab/{t}": {"rank": C(r, f"FacT/configs/tt/{t}.yaml:3 rank: {r}"),
                  "scale": C(s, f"FacT/configs/tt/{t}.yaml:4 scale: {s}")}
    for t, (r, s) in _TT.items()
}
METHODS = {
    "fact_tk": {"dropout": FACT["dropout"]},
    "fact_tt": {"dropout": C(0.1, "FacT/fact_tt.py:114,124 _.dp = nn.Dropout(0.1) (inside the factorised update)")},
}
PER_TASK = {
    task: {**{f"fact_tk.{k}": c for k, c in FACT_TK[task].items()},
           **{f"fact_tt.{k}": c for k, c in FACT_TT[task].items()}}
    for task in FACT_TK
}

RECIPES.add(Recipe(
    name="fact-vtab",
    summary="FacT's VTAB-1k runs: RepAdapter's protocol (AdamW 1e-3, wd 1e-4 on every tensor, timm cosine stepped "
            "per epoch, no augmentation, plain bicubic 224 resize, best of 10 test evaluations), seed 42",
    repo=REPO, benchmarks=("vtab",),
    protocol=PROTOCOL, methods=METHODS, per_task=PER_TASK,
    deviations=(
        "AdaptFormer's VTAB row ('as reprinted by FacT') is not produced by this repository: FacT/ runs only "
        "FacT-TT / FacT-TK (FacT/run.sh), and binary_adapter/ trains 1-bit AdaptFormer for a later paper.",
        "Evaluation uses the task's test split; fact_tk.py evaluates the global `test_dl` (the same split).",
    ),
))
