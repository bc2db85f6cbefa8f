"""The training loop: schedule, every method learns, non-finite loss stops the run, resume is exact."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import petlbench
from petlbench.engine import EvalSet, Execution, NonFiniteLoss, TensorBatches, lr_schedule, train

from tiny import build


def quadrant_data(n: int = 96, seed: int = 0):
    """Class = the bright quadrant of a 32x32 image, drawn in a class-specific colour (4 classes): learnable
    in a few steps even by a randomly initialised backbone."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.randint(0, 60, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    colours = torch.tensor([[180, 0, 0], [0, 180, 0], [0, 0, 180], [120, 120, 0]], dtype=torch.uint8)
    for i, c in enumerate(y.tolist()):
        r, q = divmod(c, 2)
        x[i, :, r * 16:(r + 1) * 16, q * 16:(q + 1) * 16] += colours[c].view(3, 1, 1)
    return x, y


def mean_loss(model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        xf = (x.float() / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
            [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        return F.cross_entropy(model(xf), y).item()


def test_schedule_warmup_then_cosine():
    s = lr_schedule(100, 10, lr=1.0, warmup_lr=0.0, min_lr=0.1)
    assert s[0] == 0.0 and s[5] == pytest.approx(0.5) and s[10] == pytest.approx(1.0)
    assert s[-1] == pytest.approx(0.1, abs=1e-3) and all(a >= b for a, b in zip(s[10:], s[11:]))


@pytest.mark.parametrize("method", petlbench.list_methods())
def test_two_epochs_lower_the_loss(method):
    torch.manual_seed(0)
    model = petlbench.create_model("vit_tiny_patch16_224", method=method, num_classes=4, img_size=32, patch_size=8,
                                   depth=2, embed_dim=64, num_heads=2)
    x, y = quadrant_data()
    before = mean_loss(model, x, y)
    res = train(model, TensorBatches(x, y, 8, shuffle=True), [EvalSet("train", TensorBatches(x, y, 96, False))],
                epochs=2, lr=1e-2 if method != "full" else 1e-3, weight_decay=0.0, execution=Execution(device="cpu", channels_last=False))
    after = mean_loss(model, x, y)
    assert after < before - 0.02, f"{method}: loss {before:.3f} -> {after:.3f}"
    assert [h["epoch"] for h in res.history] == [1, 2] and res.images_seen == 2 * len(y)


def test_non_finite_loss_stops():
    model = build("lora")
    x = torch.full((8, 3, 32, 32), float("nan"))
    with pytest.raises(NonFiniteLoss, match="loss is nan at epoch 1, batch 1"):
        train(model, TensorBatches(x, torch.zeros(8, dtype=torch.long), 4, True), [], epochs=1, lr=1e-3,
              weight_decay=0.0, execution=Execution(device="cpu"))


def test_grad_accum_matches_big_batch():
    x, y = quadrant_data(32)
    results = []
    for bs, accum in ((16, 1), (8, 2)):
        torch.manual_seed(0)
        model = build("repadapter", method_cfg={"dropout": 0.0})
        train(model, TensorBatches(x, y, bs, shuffle=False), [], epochs=1, lr=1e-2, weight_decay=0.0,
              execution=Execution(device="cpu", grad_accum=accum, channels_last=False))
        results.append(torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad]))
    torch.testing.assert_close(results[0], results[1], atol=1e-5, rtol=1e-4)


class Stop(Exception):
    pass


def test_resume_after_kill_is_exact(tmp_path):
    x, y = quadrant_data(48)
    kw = dict(epochs=4, lr=3e-3, weight_decay=1e-4, warmup_epochs=1, eval_every=1, select_on="train",
              execution=Execution(device="cpu", channels_last=False))

    def fresh():
        torch.manual_seed(0)
        return build("repadapter")  # dropout 0.1: the resume must restore the RNG too

    straight = train(fresh(), TensorBatches(x, y, 16, True, seed=3), [EvalSet("train", TensorBatches(x, y, 48, False))], **kw)
    resume = str(tmp_path / "r.pt")

    def killer(stage, done, total, info):
        if done == 2:
            raise Stop()

    torch.manual_seed(123)
    with pytest.raises(Stop):
        train(fresh(), TensorBatches(x, y, 16, True, seed=3), [EvalSet("train", TensorBatches(x, y, 48, False))],
              resume_path=resume, progress=killer, **kw)
    model = fresh()
    resumed = train(model, TensorBatches(x, y, 16, True, seed=3), [EvalSet("train", TensorBatches(x, y, 48, False))],
                    resume_path=resume, **kw)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    for a, b in zip(straight.history, resumed.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["train"] == b["train"]


def test_mixup_with_an_odd_last_batch():
    model = build("repadapter")
    x, y = quadrant_data(9)
    res = train(model, TensorBatches(x, y, 4, True), [], epochs=1, lr=1e-3, weight_decay=0.0, mixup=0.8, cutmix=1.0,
                label_smoothing=0.1, num_classes=5, execution=Execution(device="cpu"))
    assert res.images_seen == 8  # 4 + 4 + (1 dropped: Mixup pairs samples)
