"""Convpass against the authors' computation (JieShibo/PETL-ViT@026e4f1, convpass/vtab/convpass.py), its
published defaults, its token layouts and refusals, and its VTAB recipes against the authors' yaml files."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import petlbench
from petlbench.errors import ConfigError
from petlbench.recipe import RECIPES, check_recipe

from tiny import build, images, randomize_trainable


def quick_gelu(x):  # convpass.py:101-103
    return x * torch.sigmoid(1.702 * x)


def authors_convpass(x, c, grid):
    """convpass.py:129-149 (Convpass.forward, eval: dropout off), its hard-coded 14 x 14 grid as `grid`;
    `c` holds the weights (our ConvpassBranch: down, conv, up)."""
    H, W = grid
    B, N, C = x.shape
    dim = c.down.out_features
    x_down = F.linear(x, c.down.weight, c.down.bias)  # :132 x_down = self.adapter_down(x)
    x_down = quick_gelu(x_down)  # :133
    x_patch = x_down[:, 1:].reshape(B, H, W, dim).permute(0, 3, 1, 2)  # :135
    x_patch = F.conv2d(x_patch, c.conv.weight, c.conv.bias, 1, 1)  # :136 (nn.Conv2d(dim, dim, 3, 1, 1) :110)
    x_patch = x_patch.permute(0, 2, 3, 1).reshape(B, H * W, dim)  # :137
    x_cls = x_down[:, :1].reshape(B, 1, 1, dim).permute(0, 3, 1, 2)  # :139
    x_cls = F.conv2d(x_cls, c.conv.weight, c.conv.bias, 1, 1)  # :140
    x_cls = x_cls.permute(0, 2, 3, 1).reshape(B, 1, dim)  # :141
    x_down = torch.cat([x_cls, x_patch], dim=1)  # :143
    x_down = quick_gelu(x_down)  # :145
    return F.linear(x_down, c.up.weight, c.up.bias)  # :147


def authors_forward(model, img, s, attn_only):
    """timm's ViT forward with the authors' block (convpass.py:7-10; :13-16 for convpass_attn), on the frozen
    modules and our bypass weights of `model` (eval: drop path is the identity)."""
    grid = tuple(model.patch_embed.grid_size)
    x = model.norm_pre(model._pos_embed(model.patch_embed(img)))
    for blk in model.blocks:
        h = blk.norm1(x)
        x = x + blk.drop_path1(blk.attn.base(h)) + blk.drop_path1(authors_convpass(h, blk.attn, grid)) * s  # :8, :14
        h = blk.norm2(x)
        mlp = blk.mlp if attn_only else blk.mlp.base
        x = x + blk.drop_path2(mlp(h))
        if not attn_only:
            x = x + blk.drop_path2(authors_convpass(h, blk.mlp, grid)) * s  # :9
    return model.forward_head(model.norm(x))


@pytest.mark.parametrize("cfg", [{}, {"scale": 0.5, "xavier_init": True}, {"where": "attn", "scale": 10.0}])
def test_equals_the_authors_computation(cfg):
    torch.manual_seed(0)
    model = build("convpass", "vit_cls", method_cfg=cfg).eval()
    randomize_trainable(model)  # up starts at zero: without this both sides would be the plain ViT
    x = images()
    with torch.no_grad():
        ours, theirs = model(x), authors_forward(model, x, cfg.get("scale", 1.0), cfg.get("where") == "attn")
        for blk in model.blocks:
            blk.attn.scale = 0.0
            if hasattr(blk.mlp, "scale"):
                blk.mlp.scale = 0.0
        without = model(x)  # the bypass must matter
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-5)
    assert (ours - without).abs().max() > 1e-3


def test_init_is_the_authors():
    torch.manual_seed(0)
    blk = build("convpass", "vit_cls").blocks[0]
    assert not hasattr(blk.mlp.base, "conv")
    c = blk.mlp
    eye = torch.zeros(8, 8, 3, 3)
    eye[:, :, 1, 1] = torch.eye(8)
    assert torch.equal(c.conv.weight, eye)  # convpass.py:114-115 zeros, then eye(8) on the centre tap
    assert torch.count_nonzero(c.up.weight) == 0 and torch.count_nonzero(c.up.bias) == 0  # :122-123
    assert torch.count_nonzero(c.down.bias) == 0 and torch.count_nonzero(c.conv.bias) == 0  # :121, :116
    bound = (6 / (64 + 8)) ** 0.5  # :120 xavier_uniform_ on down (64 -> 8)
    assert c.down.weight.abs().max() <= bound and c.down.weight.std() > bound / 4
    xav = build("convpass", "vit_cls", method_cfg={"xavier_init": True}).blocks[0].attn.conv.weight
    assert xav.abs().max() <= (6 / (8 * 9 * 2)) ** 0.5 and torch.count_nonzero(xav[:, :, 0, 0]) > 0  # :112


def test_published_defaults():
    from petlbench.method import METHODS

    assert dataclasses.asdict(METHODS.get("convpass").config_cls()) == {
        "dim": 8,  # train.py:69 set_Convpass(model, args.method, dim=8, ...)
        "scale": 1.0,  # convpass.py:188 def set_Convpass(model, method, dim=8, s=1, xavier_init=False)
        "xavier_init": False,  # convpass.py:188 xavier_init=False
        "where": "attn_mlp",  # convpass.py:189-193 method == 'convpass': adapter_attn and adapter_mlp
        "dropout": 0.1,  # convpass.py:126 self.dropout = nn.Dropout(0.1)
    }


def test_bypass_count_formula():
    model = build("convpass", "vit_cls")  # d = 64, k = 8, 2 blocks, 2 bypasses each
    d, k = 64, 8
    assert petlbench.count_trainable(model, include_head=False) == 4 * (d * k + k + 9 * k * k + k + k * d + d)
    attn = build("convpass", "vit_cls", method_cfg={"where": "attn"})
    assert petlbench.count_trainable(attn, include_head=False) == 2 * (d * k + k + 9 * k * k + k + k * d + d)


def test_prefix_tokens_are_one_by_one_grids():
    """Class and register tokens each see only the conv's centre tap; patch tokens never see them."""
    torch.manual_seed(0)
    model = build("convpass", "vit_reg_ls").eval()  # 1 class + 2 register tokens, 4 x 4 grid
    randomize_trainable(model)
    c = model.blocks[0].attn
    assert c.prefix == 3 and c.grid == (1, 4, 4)
    h = torch.randn(2, 3 + 16, 64)
    h2 = h.clone()
    h2[:, 1] += 1.0  # change one register token
    with torch.no_grad():
        a, b = c.bypass(h), c.bypass(h2)
        z = quick_gelu(F.linear(h[:, :3], c.down.weight, c.down.bias))
        centre = quick_gelu(F.linear(z, c.conv.weight[:, :, 1, 1], c.conv.bias))
        expect = F.linear(centre, c.up.weight, c.up.bias)
    assert torch.allclose(a[:, :3], expect, atol=1e-5)
    changed = (a - b).abs().amax(dim=(0, 2)) > 0
    assert changed.tolist() == [False, True] + [False] * 17


def test_no_prefix_tokens_convolve_every_token():
    model = build("convpass", "vit_gap")
    assert model.blocks[0].mlp.prefix == 0 and model.blocks[0].mlp.grid == (1, 4, 4)


def test_non_square_grid():
    model = petlbench.create_model("vit_tiny_patch16_224", method="convpass", num_classes=3, pretrained=False,
                                   img_size=(32, 48), patch_size=8, depth=1, embed_dim=32, num_heads=2).eval()
    assert model.blocks[0].attn.grid == (1, 4, 6)
    assert model(torch.randn(1, 3, 32, 48)).shape == (1, 3)


def test_patch_dropout_is_refused():
    with pytest.raises(ConfigError, match="patch_drop_rate"):
        petlbench.create_model("vit_tiny_patch16_224", method="convpass", num_classes=3, pretrained=False,
                               img_size=32, patch_size=8, depth=1, embed_dim=32, num_heads=2, patch_drop_rate=0.5)


def test_dynamic_size_takes_a_square_grid_and_refuses_others():
    model = petlbench.create_model("vit_tiny_patch16_224", method="convpass", num_classes=3, pretrained=False,
                                   img_size=32, patch_size=8, depth=1, embed_dim=32, num_heads=2,
                                   dynamic_img_size=True).eval()
    assert model.blocks[0].attn.grid is None
    assert model(torch.randn(1, 3, 48, 48)).shape == (1, 3)  # 6 x 6
    with pytest.raises(ConfigError, match="24 patch tokens are not a square grid"):
        model(torch.randn(1, 3, 32, 48))


def test_other_input_size_is_refused():
    attn = build("convpass", "vit_cls").eval().blocks[0].attn  # built for 1 + 4 x 4 tokens
    with pytest.raises(ConfigError, match="26 tokens, .* 1 prefix tokens and a 4x4 patch grid"):
        attn(torch.randn(1, 26, 64))


def test_swin_is_refused():
    with pytest.raises(ConfigError, match="does not support swin"):
        build("convpass", "swin")


# configs/<method>/<task>.yaml of the authors' repository: lines 3 and 4 ("scale: ...", "xavier_init: ...").
AUTHORS_YAML = {
    "convpass": {
        "cifar": "scale: 0.1 xavier_init: False", "caltech101": "scale: 1 xavier_init: False",
        "dtd": "scale: 0.01 xavier_init: True", "oxford_flowers102": "scale: 0.1 xavier_init: True",
        "oxford_iiit_pet": "scale: 1 xavier_init: True", "svhn": "scale: 100 xavier_init: True",
        "sun397": "scale: 0.1 xavier_init: False", "patch_camelyon": "scale: 10 xavier_init: False",
        "eurosat": "scale: 10 xavier_init: False", "resisc45": "scale: 10 xavier_init: False",
        "diabetic_retinopathy": "scale: 1 xavier_init: False", "clevr_count": "scale: 1 xavier_init: False",
        "clevr_dist": "scale: 0.1 xavier_init: True", "dmlab": "scale: 10 xavier_init: False",
        "kitti": "scale: 10 xavier_init: True", "dsprites_loc": "scale: 100 xavier_init: True",
        "dsprites_ori": "scale: 0.1 xavier_init: True", "smallnorb_azi": "scale: 100 xavier_init: True",
        "smallnorb_ele": "scale: 1 xavier_init: True",
    },
    "convpass_attn": {
        "cifar": "scale: 0.1 xavier_init: True", "caltech101": "scale: 100 xavier_init: True",
        "dtd": "scale: 0.1 xavier_init: True", "oxford_flowers102": "scale: 1 xavier_init: True",
        "oxford_iiit_pet": "scale: 1 xavier_init: True", "svhn": "scale: 100 xavier_init: True",
        "sun397": "scale: 0.1 xavier_init: True", "patch_camelyon": "scale: 10 xavier_init: True",
        "eurosat": "scale: 10 xavier_init: True", "resisc45": "scale: 100 xavier_init: True",
        "diabetic_retinopathy": "scale: 0.1 xavier_init: True", "clevr_count": "scale: 10 xavier_init: True",
        "clevr_dist": "scale: 1 xavier_init: True", "dmlab": "scale: 10 xavier_init: True",
        "kitti": "scale: 10 xavier_init: True", "dsprites_loc": "scale: 10 xavier_init: True",
        "dsprites_ori": "scale: 1 xavier_init: True", "smallnorb_azi": "scale: 100 xavier_init: True",
        "smallnorb_ele": "scale: 1 xavier_init: True",
    },
}


@pytest.mark.parametrize("name,method,where", [("convpass-vtab", "convpass", "attn_mlp"),
                                               ("convpass-attn-vtab", "convpass_attn", "attn")])
def test_recipe_equals_the_authors_files(name, method, where):
    from petlbench.task import TASKS

    r = RECIPES.get(name)
    check_recipe(r)
    assert r.benchmarks == ("vtab",) and len(r.repo.split("@")[1]) == 40
    assert set(r.per_task) == {n for n in TASKS.names() if n.startswith("vtab/")}
    for task, line in AUTHORS_YAML[method].items():
        _, s, _, x = line.split()
        m = r.method_values("convpass", f"vtab/{task}")
        assert m == {"where": where, "dim": 8, "dropout": 0.1, "scale": float(s), "xavier_init": x == "True"}, task
    p = r.protocol_values("convpass", "vtab/cifar")
    assert p["lr"] == 1e-3  # train.py:57 parser.add_argument('--lr', type=float, default=1e-3)
    assert p["weight_decay"] == 1e-4  # train.py:58 parser.add_argument('--wd', type=float, default=1e-4)
    assert p["drop_path"] == 0.1  # train.py:66 create_model(..., drop_path_rate=0.1)
    assert p["optimizer"] == "adamw" and p["decay_filter"] == "all"  # train.py:83 AdamW(trainable, ...)
    # train.py:84-85 CosineLRScheduler(opt, t_initial=100, warmup_t=10, lr_min=1e-5, warmup_lr_init=1e-6, ...)
    assert (p["epochs"], p["warmup_epochs"], p["min_lr"], p["warmup_lr"]) == (100, 10, 1e-5, 1e-6)
    assert p["schedule"] == "timm_epoch"  # train.py:30 scheduler.step(ep)
    assert p["eval_every"] == 10  # train.py:31 if ep % 10 == 9
    assert p["batch_size"] == 64 and p["drop_last"] is True  # vtab.py:50 batch_size=64, :60 drop_last=True
    assert p["interpolation"] == "bicubic"  # vtab.py:53 transforms.Resize((224, 224), interpolation=3)
    assert p["seed"] == 42  # train.py:56 parser.add_argument('--seed', type=int, default=42)
    assert p["weights"] == "vit_base_patch16_224.orig_in21k"  # README.md:26 imagenet21k/ViT-B_16.npz


def test_video_tubelet_slices_are_grids_of_their_own():
    torch.manual_seed(0)
    model = petlbench.create_model("videomae_vit_base_patch16_224", method="convpass", num_classes=3,
                                   img_size=32, patch_size=8, embed_dim=64, depth=1, num_heads=2, num_frames=4)
    randomize_trainable(model)
    c = model.eval().blocks[0].mlp
    assert c.prefix == 0 and c.grid == (2, 4, 4)  # 4 frames / tubelet 2, 32 / 8
    h = torch.randn(1, 32, 64)
    h2 = h.clone()
    h2[:, 5] += 1.0  # a token of the first slice
    with torch.no_grad():
        changed = (c.bypass(h) - c.bypass(h2)).abs().amax(dim=(0, 2)) > 0
    assert changed[:16].any() and not changed[16:].any()
