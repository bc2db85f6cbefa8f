"""Segmentation recipes (ADE20K).

mmseg-setr-ade20k, mmseg-upernet-ade20k: petlbench's two measured settings (tasks/segmentation: seg/ade20k and
seg/ade20k-upernet), as mmsegmentation 1.2.2's own configs set them: configs/setr/setr_vit-l_pup_8xb2-160k_ade20k-
512x512.py and configs/vit/vit_vit-b16_mln_upernet_8xb2-160k_ade20k-512x512.py with their _base_ files ("SETR",
"UPERNET", "SCHED" below; line numbers of the files installed with the mmsegmentation==1.2.2 wheel under
mmseg/.mim/configs/, the repository's configs/ at tag v1.2.2), and the shipped mmengine configs that port them
(tasks/segmentation/configs/*.py, petlbench's files). Only the protocol fields the segmentation runner reads
(tasks/segmentation/runner.py SEG_FIELDS, plus the optimizer it checks against the config); the rest of the recipe
(heads, neck, lr multipliers, decay multipliers, the LR schedulers, pipelines) is the config file itself.

vpetl-dense: the ADE20K rows of V-PETL Bench's "Benchmark results of dense prediction on PASCAL VOC and ADE20K"
table (Swin-L, ImageNet-22K), synbol/Parameter-Efficient-Transfer-Learning-Benchmark at commit c188fad: published
rows only.
"""
from petlbench.recipe import RECIPES, Cited as C, Recipe

MMSEG = "open-mmlab/mmsegmentation@v1.2.2"  # the PyPI release installed here; its configs ship in mmseg/.mim/
SETR = "configs/setr/setr_vit-l_pup_8xb2-160k_ade20k-512x512.py"
UPERNET = "configs/vit/vit_vit-b16_mln_upernet_8xb2-160k_ade20k-512x512.py"
SCHED = "configs/_base_/schedules/schedule_160k.py"
OURS = "tasks/segmentation/configs"  # petlbench's mmengine configs
OURS_SETR = f"{OURS}/setr_pup_vit-l16_ade20k_512.py"
OURS_UPERNET = f"{OURS}/upernet_vit-b16_ade20k_512.py"
OURS_BASE = f"{OURS}/_ade20k_512.py"

COMMON = dict(
    img_size=C(512, f"{SETR}:5 / {UPERNET}:6 crop_size = (512, 512); {OURS_BASE}:9"),
    batch_size=C(16, f"{SETR}:69-70 / {UPERNET}:41-42 8 GPUs x train_dataloader batch_size=2; {OURS_BASE}:10 "
                     "global_batch_size = 16"),
    max_iters=C(160_000, f"{SCHED}:15-16 IterBasedTrainLoop max_iters=160000; {OURS_BASE}:59"),
    eval_every=C(16_000, f"{SCHED}:16 val_interval=16000; {OURS_BASE}:59"),
)
COMMON_DEVIATIONS = (
    "mmseg fine-tunes its own VisionTransformer whole; petlbench freezes a timm ViT (PETLViT, "
    "tasks/segmentation/backbone.py) and trains the method's tensors and the heads.",
    "Seed: mmseg's configs set none (configs/_base_/default_runtime.py has no `randomness`: mmengine draws one); "
    "petlbench seeds every run (Protocol.seed, 42).",
    "One process: SyncBN becomes BN (runner._replace_syncbn); on CUDA petlbench trains with bf16 autocast "
    "(amp=auto -> AmpOptimWrapper), mmseg's OptimWrapper in fp32.",
    "A max_iters other than 160k stretches the config's LR schedulers to it (runner.stretch_schedule); mmseg's "
    "bounds are fixed iterations.",
)

RECIPES.add(Recipe(
    name="mmseg-setr-ade20k",
    summary="mmseg's SETR-PUP ViT-L/16 ADE20K 512x512: SGD lr 1e-3 momentum 0.9 wd 0, heads at 10x, PolyLR "
            "(power 0.9, eta_min 1e-4), 160k iterations at batch 16, validation every 16k",
    repo=MMSEG, benchmarks=("seg",),
    protocol=dict(
        COMMON,
        seg_config=C("setr_pup_vit-l16_ade20k_512", f"{OURS_SETR}:1-6 (mmseg's {SETR} with a PETLViT backbone)"),
        backbone=C("vit_large_patch16_224", "configs/_base_/models/setr_pup.py:16-23 VisionTransformer patch 16, "
                                            f"embed_dims 1024, 24 layers, 16 heads; {OURS_SETR}:10"),
        weights=C("vit_large_patch16_224.orig_in21k", f"{OURS_SETR}:11 (mmseg loads another checkpoint, "
                                                      f"{SETR}:14-15; see deviations)"),
        drop_path=C(0.0, "mmseg/models/backbones/vit.py:199 drop_path_rate=0. (not set by the config); "
                         f"{SETR}:13 drop_rate=0.; {OURS_BASE}:56"),
        optimizer=C("sgd", f"{SCHED}:2 dict(type='SGD', ...); {SETR}:64-65 keeps the type; {OURS_SETR}:26"),
        momentum=C(0.9, f"{SCHED}:2 momentum=0.9; {OURS_SETR}:26"),
        lr=C(1e-3, f"{SETR}:64 optimizer = dict(lr=0.001, weight_decay=0.0); {OURS_SETR}:26"),
        weight_decay=C(0.0, f"{SETR}:64 weight_decay=0.0; {OURS_SETR}:26"),
    ),
    deviations=(
        f"Weights: mmseg's SETR config loads pretrain/vit_large_p16.pth ({SETR}:14-15), a conversion of timm's "
        "jx_vit_large_p16_384 (configs/_base_/models/setr_pup.py:14: ImageNet-21k pre-trained, ImageNet-1k "
        "fine-tuned at 384 px); petlbench's seg/ade20k loads timm's vit_large_patch16_224.orig_in21k (ImageNet-21k "
        "only), the RepAdapter paper's segmentation setting.",
    ) + COMMON_DEVIATIONS,
))

RECIPES.add(Recipe(
    name="mmseg-upernet-ade20k",
    summary="mmseg's UperNet + multi-level neck on ViT-B/16, ADE20K 512x512: AdamW lr 6e-5 wd 0.01 (none on "
            "pos_embed / cls_token / norms), 1,500-iteration linear warm-up then linear decay, 160k iterations at "
            "batch 16, validation every 16k",
    repo=MMSEG, benchmarks=("seg",),
    protocol=dict(
        COMMON,
        seg_config=C("upernet_vit-b16_ade20k_512", f"{OURS_UPERNET}:1-4 (mmseg's {UPERNET} with a PETLViT backbone)"),
        backbone=C("vit_base_patch16_224", "configs/_base_/models/upernet_vit-b16_ln_mln.py:15-22 "
                                           "VisionTransformer patch 16, embed_dims 768, 12 layers, 12 heads; "
                                           f"{OURS_UPERNET}:8"),
        weights=C("vit_base_patch16_224.orig_in21k", f"{OURS_UPERNET}:9 (mmseg loads another checkpoint, "
                                                     f"{UPERNET}:10; see deviations)"),
        drop_path=C(0.0, "configs/_base_/models/upernet_vit-b16_ln_mln.py:27 drop_path_rate=0.0; "
                         f"{OURS_BASE}:56"),
        optimizer=C("adamw", f"{UPERNET}:16-20 optim_wrapper(_delete_=True, optimizer=dict(type='AdamW', ...)); "
                             f"{OURS_UPERNET}:23"),
        lr=C(6e-5, f"{UPERNET}:20 lr=0.00006; {OURS_UPERNET}:23"),
        weight_decay=C(0.01, f"{UPERNET}:20 weight_decay=0.01; {OURS_UPERNET}:23"),
    ),
    deviations=(
        f"Weights: mmseg's config loads pretrain/vit_base_patch16_224.pth ({UPERNET}:10), a conversion of timm's "
        "vit_base_patch16_224 (ImageNet-21k pre-trained, ImageNet-1k fine-tuned); petlbench's seg/ade20k-upernet "
        "loads vit_base_patch16_224.orig_in21k (ImageNet-21k only).",
        f"AdamW betas (0.9, 0.999) ({UPERNET}:20) and the decay multipliers ({UPERNET}:21-25) live in "
        f"{OURS_UPERNET}:23-25; Protocol.momentum and Protocol.decay_filter do not apply to segmentation runs.",
    ) + COMMON_DEVIATIONS,
))

VPETL = "synbol/Parameter-Efficient-Transfer-Learning-Benchmark@c188fad2930fa2d1c07a8a64848427fd24ce6006"

RECIPES.add(Recipe(
    name="vpetl-dense",
    summary="V-PETL Bench's ADE20K rows (Swin-L, ImageNet-22K; published rows only: its dense-prediction code "
            "is not released)",
    repo=VPETL, benchmarks=("seg",),
    protocol=dict(
        backbone=C("swin_large_patch4_window7_224", "README.md:478 'We evaluate 9 PETL algorithms with Swin-L "
                                                    "models pre-trained on ImageNet-22K'; README.md:205-208"),
        weights=C("swin_large_patch4_window7_224.ms_in22k", "README.md:205-208 Swin-L, Supervised, ImageNet-22K, "
                                                            "swin_large_patch4_window7_224_22k.pth"),
    ),
    deviations=(
        "Published rows only: tasks/reference/dense_published.csv, dataset ade20k, backbone Swin-L (Full "
        "fine-tuning, Frozen, Bitfit, LN TUNE, Partial-1, Adapter, LoRA, AdaptFormer, LoRand, E3VA, Mona; "
        "README.md:483-495). petlbench runs no Swin-L UperNet: its segmentation tasks are SETR-PUP on ViT-L/16 "
        "and UperNet on ViT-B/16 through a ViT backbone (PETLViT), so a run with recipe=vpetl-dense is not a "
        "reproduction of these rows.",
        "No training recipe exists to cite: at c188fad SemanticSegmentation/README.md:1 reads 'Coming Soon...', the "
        "repository's whole history holds no dense-prediction code or config (ImageClassification/, "
        "VideoActionRecognition/ and the README files only), and the checkpoints are 'Coming Soon' "
        "(README.md:480). Decode head, crop size, schedule, optimizer, lr and batch size are unknown; only the "
        "backbone and its weights are stated.",
        "The table's memory column is measured on VOC (README.md:483 'Memory (VOC)'); no ADE20K memory is printed.",
    ),
))
