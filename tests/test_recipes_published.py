"""The recipes behind the published VTAB-1k rows of VPT, SSF and FacT: they name only real fields, and the values
equal what the authors' files say (each expected value quotes the authors' line)."""
import pytest

from petlbench.recipe import RECIPES, check_recipe


@pytest.mark.parametrize("name", ["vpt-vtab", "ssf-vtab", "fact-vtab"])
def test_recipe_fields_exist(name):
    r = RECIPES.get(name)
    check_recipe(r)
    assert r.benchmarks == ("vtab",)
    assert r.repo.split("@")[1] and len(r.repo.split("@")[1]) == 40


def test_vpt_prompt_protocol():
    r = RECIPES.get("vpt-vtab")
    p = r.protocol_values("vpt", "vtab/cifar")
    assert p["optimizer"] == "sgd"  # configs/base-prompt.yaml:14 OPTIMIZER: "sgd"
    assert p["momentum"] == 0.9  # configs/base-prompt.yaml:15 MOMENTUM: 0.9
    assert p["batch_size"] == 128  # configs/base-prompt.yaml:25 BATCH_SIZE: 128
    assert p["warmup_epochs"] == 10  # configs/base-prompt.yaml:18 WARMUP_EPOCH: 10
    assert p["epochs"] == 100  # configs/base-prompt.yaml:19 TOTAL_EPOCH: 100
    assert p["lr"] == 0.01  # src/configs/config.py:100 _C.SOLVER.BASE_LR = 0.01
    assert p["warmup_lr"] == 0.0  # src/solver/lr_scheduler.py:58 float(step) / float(max(1.0, self.warmup_steps))
    assert p["min_lr"] == 0.0  # src/solver/lr_scheduler.py:62-63 return max(0.0, 0.5 * (1. + math.cos(...)))
    assert p["normalize"] == "imagenet"  # src/data/datasets/tf_dataset.py:75 [0.485, 0.456, 0.406]
    assert p["train_split"] == "train800val200"  # src/data/datasets/tf_dataset.py:180 "train800val200"
    assert p["eval_every"] == p["epochs"]  # demo.ipynb:632 get_df(..., is_best=False, is_last=True)
    assert p["seed"] == 42  # tune_vtab.py:284 random_seeds = [42, 44, 82, 100, 800]
    assert p["schedule"] == "per_epoch"  # src/engine/trainer.py:221 self.scheduler.step() once per epoch
    assert p["decay_filter"] == "no_bias"  # src/solver/optimizer.py:60-62 the head bias gets no decay
    m = r.method_values("vpt", "vtab/cifar")
    assert m["deep"] is True  # demo.ipynb:125 MODEL.PROMPT.DEEP "True"
    assert m["dropout"] == 0.1  # demo.ipynb:126 MODEL.PROMPT.DROPOUT "0.1"


def test_vpt_baselines_and_demo_values():
    from petlbench.tasks.recipes.vpt import VPT_DEEP_DEMO

    r = RECIPES.get("vpt-vtab")
    full = r.protocol_values("full", "vtab/dmlab")
    assert full["optimizer"] == "adamw"  # configs/base-finetune.yaml:14 OPTIMIZER: "adamw"
    assert full["batch_size"] == 384  # configs/base-finetune.yaml:25 BATCH_SIZE: 384
    assert full["weight_decay"] == 0.01  # src/solver/optimizer.py:43 'weight_decay': 0.01
    assert full["warmup_epochs"] == 5  # configs/base-finetune.yaml:12 WARMUP_EPOCH: 5
    # demo.ipynb:78-81 Bias: --config-file configs/finetune/*.yaml MODEL.TRANSFER_TYPE "tinytl-bias"
    assert r.protocol_values("bitfit") == r.protocol_values("full")
    lin = r.protocol_values("linear")
    assert lin["batch_size"] == 1024  # configs/base-linear.yaml:25 BATCH_SIZE: 1024
    assert lin["optimizer"] == "sgd"  # configs/base-linear.yaml:14 OPTIMIZER: "sgd"
    assert r.method_values("vpt", "vtab/dmlab")["tokens"] == 100  # demo.ipynb:124 MODEL.PROMPT.NUM_TOKENS "100"
    assert r.method_values("vpt", "vtab/sun397")["tokens"] == 5  # demo.ipynb:146 MODEL.PROMPT.NUM_TOKENS "5"
    assert VPT_DEEP_DEMO["vtab/sun397"]["lr"].value == 12.5  # demo.ipynb:152 SOLVER.BASE_LR "12.5"
    assert VPT_DEEP_DEMO["vtab/dmlab"]["weight_decay"].value == 0.001  # demo.ipynb:131 SOLVER.WEIGHT_DECAY "0.001"
    assert VPT_DEEP_DEMO["vtab/eurosat"]["batch_size"].value == 64  # demo.ipynb:168 DATA.BATCH_SIZE "64"


def test_ssf_protocol_and_per_dataset_values():
    r = RECIPES.get("ssf-vtab")
    assert len(r.per_task) == 19
    p = r.protocol_values("ssf", "vtab/cifar")
    assert p["lr"] == 5e-3  # train_scripts/vit/vtab/cifar_100/train_ssf.sh:6 --lr 5e-3
    assert p["weight_decay"] == 5e-5  # train_scripts/vit/vtab/cifar_100/train_ssf.sh:4 --weight-decay 5e-5
    assert p["drop_path"] == 0.0  # train_scripts/vit/vtab/cifar_100/train_ssf.sh:7 --drop-path 0
    assert p["batch_size"] == 64  # cifar_100/train_ssf.sh:1 --nproc_per_node=2, :3 --batch-size 32
    assert p["warmup_lr"] == 1e-7  # cifar_100/train_ssf.sh:5 --warmup-lr 1e-7
    assert p["min_lr"] == 1e-8  # cifar_100/train_ssf.sh:6 --min-lr 1e-8
    assert p["normalize"] == "inception"  # models/vision_transformer.py:52 IMAGENET_INCEPTION_MEAN
    # models/vision_transformer.py:122 url='https://storage.googleapis.com/vit_models/augreg/B_16-i21k-300ep-...'
    assert p["weights"] == "vit_base_patch16_224.augreg_in21k"
    assert p["decay_filter"] == "timm"  # optim_factory.py:51 param.ndim <= 1 or name.endswith(".bias")
    assert p["eval_every"] == 1  # train.py:698 validate(...) every epoch
    assert p["schedule"] == "timm_next_epoch"  # train.py:709 lr_scheduler.step(epoch + 1, eval_metrics[...])
    assert p["cooldown_epochs"] == 10  # train.py:202 --cooldown-epochs default 10
    clevr = r.protocol_values("ssf", "vtab/clevr_dist")
    assert clevr["lr"] == 5e-2  # train_scripts/vit/vtab/clevr_dist/train_ssf.sh:6 --lr 5e-2
    assert clevr["weight_decay"] == 5e-2  # train_scripts/vit/vtab/clevr_dist/train_ssf.sh:4 --weight-decay 5e-2
    pets = r.protocol_values("ssf", "vtab/oxford_iiit_pet")
    assert pets["lr"] == 5e-3  # train_scripts/vit/vtab/pets/train_ssf.sh:6 --lr 5e-3
    assert r.protocol_values("ssf", "vtab/eurosat")["drop_path"] == 0.2  # eurosat/train_ssf.sh:7 --drop-path 0.2
    assert r.protocol_values("ssf", "vtab/smallnorb_azi")["lr"] == 2e-2  # smallnorb_azi/train_ssf.sh:6 --lr 2e-2


def test_fact_protocol_and_options():
    from petlbench.tasks.recipes.fact import FACT_TK

    r = RECIPES.get("fact-vtab")
    p = r.protocol_values(task="vtab/dtd")
    assert p["lr"] == 1e-3  # FacT/fact_tk.py:173 parser.add_argument('--lr', type=float, default=1e-3)
    assert p["weight_decay"] == 1e-4  # FacT/fact_tk.py:174 parser.add_argument('--wd', type=float, default=1e-4)
    assert p["drop_path"] == 0.1  # FacT/fact_tk.py:183 drop_path_rate=0.1
    assert p["warmup_lr"] == 1e-6 and p["min_lr"] == 1e-5  # FacT/fact_tk.py:205 lr_min=1e-5, warmup_lr_init=1e-6
    assert p["schedule"] == "timm_epoch"  # FacT/fact_tk.py:33 scheduler.step(ep)
    assert p["eval_every"] == 10  # FacT/fact_tk.py:34 if ep % 10 == 9
    assert p["interpolation"] == "bicubic"  # FacT/vtab.py:79 transforms.Resize((224, 224), interpolation=3)
    assert len(FACT_TK) == 19
    assert FACT_TK["vtab/dtd"]["rank"].value == 16  # FacT/configs/tk/dtd.yaml:3 rank: 16
    assert FACT_TK["vtab/dtd"]["scale"].value == 0.01  # FacT/configs/tk/dtd.yaml:4 scale: 0.01
    assert FACT_TK["vtab/svhn"]["scale"].value == 100.0  # FacT/configs/tk/svhn.yaml:4 scale: 100.0


def test_per_task_keys_are_vtab_tasks():
    from petlbench.task import TASKS

    names = set(TASKS.names())
    for name in ("vpt-vtab", "ssf-vtab"):
        assert set(RECIPES.get(name).per_task) <= names


# Every protocol field of each recipe, as its module cites it (the spot checks above quote the authors' lines;
# this pins the rest, so a changed field fails here until this table says so).
EVERY_FIELD = {
    "vpt-vtab": {
        "backbone": 'vit_base_patch16_224', "weights": 'vit_base_patch16_224.orig_in21k', "drop_path": 0.0,
        "epochs": 100, "batch_size": 128, "drop_last": False, "optimizer": 'sgd', "momentum": 0.9, "lr": 0.01,
        "weight_decay": 0.0001, "decay_filter": 'no_bias', "schedule": 'per_epoch', "warmup_epochs": 10,
        "warmup_lr": 0.0, "min_lr": 0.0, "label_smoothing": 0.0, "mixup": 0.0, "cutmix": 0.0, "randaugment": '',
        "random_erasing": 0.0, "img_size": 224, "interpolation": 'bilinear', "normalize": 'imagenet',
        "test_crop_pct": 1.0, "eval_every": 100, "eval_phase": 'end', "selection": 'reproduction',
        "train_split": 'train800val200', "test_split": 'test', "seed": 42,
    },
    "ssf-vtab": {
        "backbone": 'vit_base_patch16_224', "weights": 'vit_base_patch16_224.augreg_in21k', "epochs": 100,
        "cooldown_epochs": 10, "batch_size": 64, "drop_last": True, "optimizer": 'adamw', "decay_filter": 'timm',
        "schedule": 'timm_next_epoch', "warmup_epochs": 10, "warmup_lr": 1e-07, "min_lr": 1e-08,
        "label_smoothing": 0.0, "mixup": 0.0, "cutmix": 0.0, "randaugment": '', "random_erasing": 0.0,
        "img_size": 224, "interpolation": 'bicubic', "normalize": 'inception', "test_crop_pct": 1.0, "eval_every": 1,
        "eval_phase": 'end', "selection": 'reproduction', "train_split": 'train800val200', "test_split": 'test',
        "seed": 42,
    },
    "fact-vtab": {
        "backbone": 'vit_base_patch16_224', "weights": 'vit_base_patch16_224.orig_in21k', "drop_path": 0.1,
        "epochs": 100, "batch_size": 64, "drop_last": True, "optimizer": 'adamw', "lr": 0.001, "weight_decay": 0.0001,
        "decay_filter": 'all', "schedule": 'timm_epoch', "warmup_epochs": 10, "warmup_lr": 1e-06, "min_lr": 1e-05,
        "label_smoothing": 0.0, "mixup": 0.0, "cutmix": 0.0, "randaugment": '', "random_erasing": 0.0,
        "img_size": 224, "interpolation": 'bicubic', "normalize": 'imagenet', "test_crop_pct": 1.0, "eval_every": 10,
        "eval_phase": 'end', "selection": 'reproduction', "train_split": 'train800val200', "test_split": 'test',
        "seed": 42,
    },
}


@pytest.mark.parametrize("name", sorted(EVERY_FIELD))
def test_every_field_is_pinned(name):
    assert {k: c.value for k, c in RECIPES.get(name).protocol.items()} == EVERY_FIELD[name]
