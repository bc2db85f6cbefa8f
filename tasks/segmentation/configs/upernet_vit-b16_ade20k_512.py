# UperNet with a multi-level neck on a PETL-wrapped ViT-B/16 (ImageNet-21k), ADE20K 512x512, 160k iterations,
# batch 16: the common lighter baseline, as mmsegmentation 1.2's vit_vit-b16_mln_upernet_8xb2-160k_ade20k-512x512.py
# (head, neck, AdamW schedule, whole-image test), with timm's ViT through petlbench as the backbone.
_base_ = ["./_ade20k_512.py"]
num_classes = 150
model = dict(
    backbone=dict(
        backbone="vit_base_patch16_224",
        weights="vit_base_patch16_224.orig_in21k",
        out_indices=(2, 5, 8, 11)),
    neck=dict(type="MultiLevelNeck", in_channels=[768, 768, 768, 768], out_channels=768, scales=[4, 2, 1, 0.5]),
    decode_head=dict(
        type="UPerHead", in_channels=[768, 768, 768, 768], in_index=[0, 1, 2, 3], pool_scales=(1, 2, 3, 6),
        channels=512, dropout_ratio=0.1, num_classes=num_classes, norm_cfg={{_base_.norm_cfg}},
        align_corners=False, loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type="FCNHead", in_channels=768, in_index=3, channels=256, num_convs=1, concat_input=False,
        dropout_ratio=0.1, num_classes=num_classes, norm_cfg={{_base_.norm_cfg}}, align_corners=False,
        loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=0.4)),
    test_cfg=dict(mode="whole"))
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=6e-05, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={"pos_embed": dict(decay_mult=0.0), "cls_token": dict(decay_mult=0.0),
                                    "norm": dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type="PolyLR", eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False)]
