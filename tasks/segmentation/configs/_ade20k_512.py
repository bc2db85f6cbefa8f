# ADE20K (ADEChallengeData2016), 512x512 crops: dataset, pipelines, evaluation and runtime, as mmsegmentation
# 1.2's configs/_base_/datasets/ade20k.py, default_runtime.py and schedule_160k.py, and the segmentor skeleton.
# Shared by the petlbench ADE20K configs; runnable with mmseg's tools/train.py as well as through
# `petlbench run --task seg/...`.
custom_imports = dict(imports=["petlbench.tasks.segmentation.backbone"], allow_failed_imports=False)
default_scope = "mmseg"

dataset_type = "ADE20KDataset"
data_root = "data/ade/ADEChallengeData2016"  # petlbench run sets it from --data-root
crop_size = (512, 512)
global_batch_size = 16  # 8 GPUs x 2 images; petlbench divides it by the number of processes
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", reduce_zero_label=True),  # 0 (other) -> 255 ignored, 1..150 -> 0..149
    dict(type="RandomResize", scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type="RandomCrop", crop_size=crop_size, cat_max_ratio=0.75),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PhotoMetricDistortion"),
    dict(type="PackSegInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=(2048, 512), keep_ratio=True),
    dict(type="LoadAnnotations", reduce_zero_label=True),  # after Resize: mIoU is computed at full resolution
    dict(type="PackSegInputs"),
]
train_dataloader = dict(
    batch_size=2, num_workers=4, persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root,
                 data_prefix=dict(img_path="images/training", seg_map_path="annotations/training"),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=4, persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root,
                 data_prefix=dict(img_path="images/validation", seg_map_path="annotations/validation"),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type="IoUMetric", iou_metrics=["mIoU"])
test_evaluator = val_evaluator

data_preprocessor = dict(
    type="SegDataPreProcessor", mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=crop_size)
norm_cfg = dict(type="SyncBN", requires_grad=True)  # petlbench uses BN in a single-process run
# The segmentor around a PETL-wrapped timm ViT; each config adds the ViT's name, weights and levels, and the heads.
model = dict(
    type="EncoderDecoder",
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type="PETLViT",
        method="repadapter",
        method_cfg=dict(train_bias=True),  # RepAdapter as the paper: adapters + every backbone bias
        img_size=512,  # the 14x14 position embedding is resampled to 32x32 when the weights load
        drop_path_rate=0.0),
    train_cfg=dict())

train_cfg = dict(type="IterBasedTrainLoop", max_iters=160000, val_interval=16000)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=16000, max_keep_ckpts=1),
    sampler_seed=dict(type="DistSamplerSeedHook"),
    visualization=dict(type="SegVisualizationHook"))
env_cfg = dict(cudnn_benchmark=True, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
               dist_cfg=dict(backend="nccl"))
vis_backends = [dict(type="LocalVisBackend")]
visualizer = dict(type="SegLocalVisualizer", vis_backends=vis_backends, name="visualizer")
log_processor = dict(by_epoch=False)
log_level = "INFO"
load_from = None
resume = False
