"""V-PETL Bench's video recipe (Xin et al. 2024, arXiv:2407.13255), from synbol/Parameter-Efficient-Transfer-Learning-
Benchmark at commit c188fad: the ViT-B (VideoMAE, Kinetics-400 self-supervised) rows of its "Benchmark results of
video action recognition on SSv2 and HMDB51" table (README.md:443-448; tasks/reference/video_published.csv,
backbone "ViT-B (VideoMAE)": Full fine-tuning, Frozen, AdaptFormer, BAPAT), as the ViT branch of
VideoActionRecognition/train/train_model_*.py ("T" below; the six files are one blob, the same as main.py at
acb17f6, and a copy of AdaptFormer's main_video.py) sets it up. Line numbers are of that commit; "kinetics.py",
"video_datasets.py", "videomae_transforms.py" are VideoActionRecognition/dataloader/*, "engine_finetune.py" and
"utils/lr_sched.py" are under VideoActionRecognition/.

V-PETL ships no launch script for these rows (and its ViT-B model file is missing, see `deviations`): the global
batch is AdaptFormer's launch (ShoufaChen/AdaptFormer@6967d67 README.md), the rest the script's argparse defaults,
which that launch leaves as they are. The Video Swin-B rows (the script's `swin_` branch, drop path 0.4) are not
this recipe: petlbench has no Video Swin backbone.
"""
from petlbench.recipe import RECIPES, Cited as C, Recipe

REPO = "synbol/Parameter-Efficient-Transfer-Learning-Benchmark@c188fad2930fa2d1c07a8a64848427fd24ce6006"
T = "VideoActionRecognition/train/train_model_*.py"
AF = "ShoufaChen/AdaptFormer@6967d676c1a5e5a11be2e2768a6e5c604bb043ed"
K = "kinetics.py"
S = "train_model_*.py"  # the same script, short

PROTOCOL = dict(
    backbone=C("videomae_vit_base_patch16_224",
               f"{T}:293-306 create_model(args.model, all_frames=num_frames, tubelet_size=2 (:128), "
               "use_mean_pooling=True (:135)): the VideoMAE ViT-B/16; README.md:211-214 ViT-B (VideoMAE), "
               "self-supervised, Kinetics-400"),
    drop_path=C(0.0, f"{T}:133 --drop_path default 0.0"),
    epochs=C(90, f"{T}:61 --epochs default 90; {AF} README.md:49 --epochs 90"),
    batch_size=C(1024, f"{AF} README.md:44 --nproc_per_node=8 --nnodes=8, :49 --batch_size 16 (per GPU, "
                       f"{T}:59-60): 64 x 16; V-PETL ships no launch script"),
    drop_last=C(True, f"{T}:233 DataLoader(dataset_train, ..., drop_last=True)"),
    optimizer=C("sgd", f"{T}:51-54 torch.optim.SGD(optim_params, lr=args.lr, ..., momentum=0.9)"),
    momentum=C(0.9, f"{T}:53 momentum=0.9"),
    lr=C(0.4, f"{T}:73 --blr default 0.1; {T}:374-377 lr = blr * eff_batch_size / 256 = 0.1 * 1024 / 256"),
    weight_decay=C(0.0, f"{T}:69 --weight_decay default 0; {AF} README.md:49 --weight_decay 0.0"),
    schedule=C("per_step", "engine_finetune.py:48-50 lr_sched.adjust_learning_rate(optimizer, "
                           "data_iter_step / len(data_loader) + epoch, args) at every iteration"),
    warmup_epochs=C(10, f"{T}:79 --warmup_epochs default 10"),
    warmup_lr=C(0.0, "utils/lr_sched.py:11-12 lr = args.lr * epoch / args.warmup_epochs (from 0)"),
    min_lr=C(0.0, f"{T}:76 --min_lr default 0.; utils/lr_sched.py:14-15 half-cycle cosine to min_lr"),
    label_smoothing=C(0.0, f"{T}:392 criterion = torch.nn.CrossEntropyLoss()"),
    mixup=C(0.0, f"{T}:420-426 train_one_epoch(...) without mixup_fn (engine_finetune.py:30 mixup_fn=None)"),
    cutmix=C(0.0, f"{T}:420-426 no mixup_fn"),
    randaugment=C("", f"{T}:198 build_training_dataset -> {K}:612-626 transform DataAugmentationForVideoMAE "
                      f"({K}:587-599): GroupMultiScaleCrop, Stack, ToTorchFormatTensor, GroupNormalize"),
    random_erasing=C(0.0, f"{K}:587-599 no RandomErasing in the training transform"),
    img_size=C(224, f"{T}:151 --input_size default 224; {K}:592 GroupMultiScaleCrop(args.input_size, ...)"),
    interpolation=C("bilinear", f"videomae_transforms.py:100 Image.BILINEAR (train); {K}:83 "
                                "Resize(size=short_side_size, interpolation='bilinear') (test)"),
    normalize=C("imagenet", f"{K}:589-590 IMAGENET_DEFAULT_MEAN / _STD unless --inception ({T}:159 default False)"),
    num_frames=C(8, f"{T}:143 --num_frames default 8"),
    frame_sampling=C("dense", f"{K}:612-626 VideoMAE(new_length=num_frames, new_step=sampling_rate, "
                              f"num_segments=1): one clip of consecutive strided frames at a random start "
                              f"({K}:543-563), for SSv2 as for HMDB51; test: {K}:269-275 every sampling_rate-th "
                              "frame"),
    frame_stride=C(4, f"{T}:144 --sampling_rate default 4"),
    test_clips=C(4, f"{T}:149 --test_num_segment default 4 ({K}:95-101, :170-172)"),
    test_crops=C(3, f"{T}:150 --test_num_crop default 3 ({K}:95-101, :168-179)"),
    eval_every=C(90, f"{T}:435 model_best = model (the same object, not a copy); :458-460 "
                     "final_test(data_loader_test, model_best): the reported number is the multi-view test of "
                     "the last epoch's weights"),
    eval_phase=C("end", f"{T}:458-466 after the last epoch"),
    selection=C("reproduction", f"{T}:458-466 final test on val.csv (video_datasets.py:97-98, :160-163), "
                                "no epoch selected"),
    seed=C(0, f"{T}:102 --seed default 0 (+ rank, :185)"),
)

# The AdaptFormer rows: AdaptFormer's own module (methods/adaptformer.py: a parallel bottleneck of 64 beside each
# MLP, fed the block's stream, output scale 0.1, ReLU, LoRA-style init), with the video model's dropout.
METHODS = {
    "adaptformer": {
        "dim": C(64, f"{T}:155 --ffn_num default 64"),
        "scale": C(0.1, f"{T}:259 ffn_adapter_scalar=\"0.1\""),
        "dropout": C(0.0, f"{T}:129 --drop default 0.0 ({AF} models/vit_video.py:124 Adapter(dropout=drop))"),
    },
}

RECIPES.add(Recipe(
    name="vpetl-video",
    summary="V-PETL Bench's ViT-B (VideoMAE K400) video rows, AdaptFormer's recipe: SGD momentum 0.9, lr 0.4 "
            "(blr 0.1 x 1024 / 256), wd 0, 90 epochs with 10 warm-up epochs from 0 and a per-step cosine to 0, "
            "no mixup / RandAugment / erasing / drop path, 8 frames at stride 4 for both datasets, the last "
            "epoch tested with 4 clips x 3 crops",
    repo=REPO, benchmarks=("video",),
    protocol=PROTOCOL,
    methods=METHODS,
    # The script takes the same arguments for both datasets (only --data_set and the class count differ,
    # T:192-197): nothing per dataset.
    per_task={},
    deviations=(
        f"The ViT-B rows cannot come from this commit's code: the ViT branch calls create_model("
        f"'vit_base_patch16_224', all_frames=..., tubelet_size=..., tuning_config=...) ({S}:293-306), which needs "
        f"AdaptFormer's models/vit_video.py; V-PETL's models/__init__.py:1 imports only the Video Swin; the script "
        f"imports datasets.* and util.* ({S}:20-21, 26-28) while the folders are dataloader/ and utils/; and it reads "
        f"model.fc ({S}:358-363), a Video Swin attribute. The rows' numbers are AdaptFormer's (Full fine-tuning, "
        "Frozen, AdaptFormer) and V-PETL's BAPAT paper's; this recipe is the script's ViT branch, i.e. AdaptFormer's "
        "main_video.py, with AdaptFormer's launch.",
        f"Batch size and lr: --batch_size is per GPU (default 512, {S}:59) and lr = blr x global batch / 256 "
        f"({S}:374-377); the recipe takes AdaptFormer's 64 GPUs x 16 = 1024 and lr 0.4. petlbench has no base-lr "
        "field: a changed batch_size keeps lr 0.4 unless lr is set too (the authors' rule: lr = 0.1 x batch_size / "
        "256, e.g. 64 -> 0.025). On fewer GPUs keep batch_size=1024 with the execution option grad_accum (the "
        f"authors' --accum_iter, {S}:62).",
        "Training crop: the authors' GroupMultiScaleCrop(224, scales [1, .875, .75, .66], max_distort=1, fixed "
        "corner / centre offsets) of the decoded frame, resized bilinearly to 224 x 224 (kinetics.py:592, "
        "videomae_transforms.py:92-138), and no horizontal flip for either dataset; petlbench scales the short "
        "side to 256, takes one random 224 crop and flips HMDB51 clips at random (tasks/video `dataset`: SSv2 "
        "is never flipped). Protocol has no field for the multi-scale crop or for the flip.",
        "Test crops: V-PETL's kinetics.py:82-86 adds CenterCrop(224) after the short-side resize ('# bruce'), so "
        "its spatial step (kinetics.py:168-169) is 0 and the 3 crops are one centre crop repeated (4 distinct "
        "views); AdaptFormer's kinetics.py:82-84 has no crop and takes 3 crops along the long side, as petlbench "
        "does.",
        "Clips of videos shorter than num_frames x frame_stride (32) frames: the authors repeat the last strided "
        "frame (kinetics.py:577-578 the offset stops advancing; test: kinetics.py:271-272 pads with "
        "all_index[-1]), petlbench repeats the video's last frame (tasks/video/clips.py sample_indices); longer "
        "videos get the same frames (tests/test_recipes_video_seg.py).",
        "View averaging: the authors average the views' raw logits per video (engine_finetune.py:233-240 np.mean "
        "of the outputs); petlbench averages their softmax scores.",
        "Monitoring: after every epoch the authors evaluate one clip (random start, kinetics.py:278-293; centre "
        f"crop, kinetics.py:73-80) on test.csv (video_datasets.py:100-101) and save the best checkpoint "
        f"({S}:428-439), which is not what is reported ({S}:435, :458-466: the last epoch's weights). petlbench "
        "evaluates once, after the last epoch (eval_every = epochs); it has no separate monitoring evaluation.",
        "HMDB51 scoring: compute_video_hmdb (engine_finetune.py:243-256) counts a video whose scoring raises as "
        "correct (top1 = 1.0); petlbench scores every video.",
        f"Trainable tensors: the authors train every key the checkpoint lacks ({S}:351-356): the method's tensors, "
        "the head and fc_norm (a VideoMAE pre-training checkpoint has none); petlbench trains the method's tensors "
        "and the head, fc_norm stays at its initialisation. The head: V-PETL's copy drops AdaptFormer's "
        "BatchNorm1d(affine=False) before the linear head (AdaptFormer main_video.py:337); petlbench's video model "
        "keeps it (AdaptFormer's, whose numbers these are).",
        f"Weight decay filter: parameters named '*bn*' get none ({S}:36-50); with weight_decay 0 it changes nothing.",
        f"Numerics: fp16 autocast with a loss scaler and no gradient clipping (engine_finetune.py:58-71, {S}:423 "
        "max_norm=None): petlbench's amp=fp16 execution option, not a protocol field.",
        "Weights: the VideoMAE ViT-B K400 checkpoint of README.md:214 (AdaptFormer PRETRAIN.md:6: VideoMAE's "
        "1600-epoch K400 pre-training), passed as weights=PATH; the recipe sets no weights.",
        "Splits: SSv2 trains on train.csv and tests on val.csv (video_datasets.py:95-98); which HMDB51 split the "
        "csv files hold is not stated; petlbench uses official split 1.",
        "Nothing of VideoMAE's own fine-tuning recipe is used by these rows: no layer decay (utils/lr_decay.py is "
        f"never imported), no repeated augmentation ({S}:145 --num_sample 1), no mixup, RandAugment or random "
        "erasing.",
    ),
))
