# SETR-PUP on a PETL-wrapped ViT-L/16 (ImageNet-21k), ADE20K 512x512, 160k iterations, batch 16: the setting of
# the RepAdapter paper's segmentation experiment, with mmsegmentation 1.2's
# setr_vit-l_pup_8xb2-160k_ade20k-512x512.py for the head, schedule and test mode. The backbone is timm's ViT
# through petlbench (any registered method); trainable: the method's parameters, the heads and, for RepAdapter,
# every backbone bias (method_cfg train_bias=True, as the paper); the rest of the backbone is frozen.
_base_ = ["./_ade20k_512.py"]
num_classes = 150
model = dict(
    backbone=dict(
        backbone="vit_large_patch16_224",
        weights="vit_large_patch16_224.orig_in21k",  # timm tag, or a local checkpoint file
        out_indices=(9, 14, 19, 23)),
    decode_head=dict(
        type="SETRUPHead", in_channels=1024, channels=256, in_index=3, num_classes=num_classes,
        dropout_ratio=0, norm_cfg={{_base_.norm_cfg}}, num_convs=4, up_scale=2, kernel_size=3,
        align_corners=False, loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=[
        dict(type="SETRUPHead", in_channels=1024, channels=256, in_index=i, num_classes=num_classes,
             dropout_ratio=0, norm_cfg={{_base_.norm_cfg}}, act_cfg=dict(type="ReLU"), num_convs=2,
             kernel_size=3, align_corners=False,
             loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=0.4))
        for i in (0, 1, 2)],
    test_cfg=dict(mode="slide", crop_size=(512, 512), stride=(341, 341)))
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="SGD", lr=0.001, momentum=0.9, weight_decay=0.0),
    paramwise_cfg=dict(custom_keys={"head": dict(lr_mult=10.0)}))
param_scheduler = [dict(type="PolyLR", eta_min=1e-4, power=0.9, begin=0, end=160000, by_epoch=False)]
