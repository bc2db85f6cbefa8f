"""The training loop: schedule, every method learns, non-finite loss stops the run, resume is exact."""
from __future__ import annotations

import numpy as np
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
    assert s[-1] == pytest.approx(0.1, abs=1e-3) and all(a >= b for a, b in zip(s[10:], s[11:], strict=False))


VIT_METHODS = [m for m in petlbench.list_methods() if "vit" in petlbench.get_method(m).families]


@pytest.mark.parametrize("method", VIT_METHODS)
def test_two_epochs_lower_the_loss(method):
    torch.manual_seed(0)
    model = petlbench.create_model("vit_tiny_patch16_224", method=method, num_classes=4, img_size=32, patch_size=8,
                                   depth=2, embed_dim=64, num_heads=2)
    x, y = quadrant_data()
    before = mean_loss(model, x, y)
    res = train(model, TensorBatches(x, y, 8, shuffle=True), [EvalSet("train", TensorBatches(x, y, 96, False))],
                epochs=2, lr=1e-3, weight_decay=0.0,
                execution=Execution(device="cpu", channels_last=False))
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

    straight = train(fresh(), TensorBatches(x, y, 16, True, seed=3), [EvalSet("train", TensorBatches(x, y, 48, False))],
                     **kw)
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
    for a, b in zip(straight.history, resumed.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["train"] == b["train"]


def test_mixup_with_an_odd_last_batch():
    model = build("repadapter")
    x, y = quadrant_data(9)
    res = train(model, TensorBatches(x, y, 4, True), [], epochs=1, lr=1e-3, weight_decay=0.0, mixup=0.8, cutmix=1.0,
                label_smoothing=0.1, num_classes=5, execution=Execution(device="cpu"))
    assert res.images_seen == 8  # 4 + 4 + (1 dropped: Mixup pairs samples)


# --- the loop's pieces, against what the loop computed before it took them as objects ---------------------------
def _lrs_of_steps(recipe, model, steps_per_epoch: int, start: int = 0) -> list[float]:
    """The lr of every optimizer step of epochs start.. under `recipe`, read where the step uses it."""
    optim = recipe.build(model, steps_per_epoch, torch.device("cpu"))
    optim.resume_at(start)
    seen = []
    optim.opt.step = lambda *a, **k: seen.append([g["lr"] for g in optim.opt.param_groups])  # lr at each step
    for epoch in range(start, recipe.total_epochs):
        optim.start_epoch(epoch)
        for _ in range(steps_per_epoch):
            optim.step()
    assert all(len(set(lrs)) == 1 for lrs in seen)  # every parameter group at the same lr
    return [lrs[0] for lrs in seen]


@pytest.mark.parametrize("schedule", ["timm_epoch", "timm_next_epoch"])
@pytest.mark.parametrize("decay_filter", ["all", "timm", "no_bias"])
def test_epoch_schedules_are_timms_scheduler_stepped_as_the_authors_do(schedule, decay_filter):
    """The lr of each step is the one timm's CosineLRScheduler, built on the run's own optimizer and stepped with
    step(epoch) / step(epoch + 1) after each epoch (the authors' loops), sets for that epoch; cooldown included."""
    from timm.scheduler import CosineLRScheduler

    from petlbench.optim import OptimRecipe, build_optimizer

    recipe = OptimRecipe(epochs=9, lr=1e-3, weight_decay=0.05, decay_filter=decay_filter, schedule=schedule,
                         warmup_epochs=3, warmup_lr=1e-6, min_lr=1e-5, cooldown_epochs=2)
    model, steps = build("lora"), 3
    opt = build_optimizer(model, "adamw", recipe.lr, recipe.weight_decay, decay_filter=decay_filter)
    sched = CosineLRScheduler(opt, t_initial=9, lr_min=1e-5, warmup_t=3, warmup_lr_init=1e-6, cycle_decay=0.1,
                              t_in_epochs=True)
    expected = []
    for epoch in range(recipe.total_epochs):
        expected += [opt.param_groups[-1]["lr"]] * steps
        sched.step(epoch + 1 if schedule == "timm_next_epoch" else epoch)
    assert _lrs_of_steps(recipe, model, steps) == expected  # exact: the same floats
    assert expected[0] == 1e-6 and expected[-1] == 1e-5 and len(set(expected)) > 5
    assert _lrs_of_steps(recipe, model, steps, start=4) == expected[4 * steps:]  # a resumed run


@pytest.mark.parametrize("schedule", ["per_step", "per_epoch"])
def test_warmup_cosine_schedules_per_step_and_per_epoch(schedule):
    """per_step: lr_schedule over all optimizer steps, min_lr in the cooldown; per_epoch: that curve at the epoch
    index, held for the epoch."""
    from petlbench.optim import OptimRecipe

    recipe = OptimRecipe(epochs=6, lr=1e-2, weight_decay=0.0, schedule=schedule, warmup_epochs=2, warmup_lr=1e-4,
                         min_lr=1e-4, cooldown_epochs=1)
    steps = 4
    if schedule == "per_step":
        expected = lr_schedule(6 * steps, 2 * steps, 1e-2, 1e-4, 1e-4) + [1e-4] * steps
    else:
        expected = [lr for lr in lr_schedule(6, 2, 1e-2, 1e-4, 1e-4) + [1e-4] for _ in range(steps)]
    got = _lrs_of_steps(recipe, build("lora"), steps)
    assert got == expected
    assert _lrs_of_steps(recipe, build("lora"), steps, start=3) == expected[3 * steps:]


def test_unknown_schedule_names_the_known_ones():
    from petlbench.optim import OptimRecipe

    with pytest.raises(petlbench.errors.PETLBenchError, match="unknown schedule 'cosine'; known: per_step"):
        OptimRecipe(epochs=1, lr=1.0, weight_decay=0.0, schedule="cosine")


def test_optim_recipe_reads_the_protocol_fields():
    from petlbench.optim import OptimRecipe
    from petlbench.run import resolve

    p = resolve("vtab/cifar", "repadapter", {"schedule": "timm_next_epoch", "cooldown_epochs": 3}).protocol
    r = OptimRecipe.from_protocol(p)
    assert (r.optimizer, r.lr, r.weight_decay, r.schedule, r.warmup_epochs, r.min_lr, r.total_epochs) == (
        p.optimizer, p.lr, p.weight_decay, "timm_next_epoch", p.warmup_epochs, p.min_lr, p.epochs + 3)


def test_batch_augment_normalises_erases_and_mixes_as_asked():
    from petlbench.engine import BatchAugment

    x, y = quadrant_data(5)
    plain = BatchAugment(normalize=((0.5,) * 3, (0.25,) * 3))
    xp, yp = plain.prepare(x, y)
    torch.testing.assert_close(xp, (x.float() / 255 - 0.5) / 0.25)
    assert torch.equal(yp, y) and plain.mix(xp, yp)[0] is xp
    assert plain.loss(torch.zeros(5, 4), y).item() == pytest.approx(torch.log(torch.tensor(4.0)).item())

    mixing = BatchAugment(random_erasing=1.0, mixup=0.8, cutmix=1.0, label_smoothing=0.1, num_classes=4)
    xm, ym = mixing.prepare(x, y)
    assert len(xm) == 4 and not torch.equal(xm, plain.prepare(x, y)[0][:4])  # odd batch made even; erased
    xs, ys = mixing.mix(xm, ym)
    assert ys.shape == (4, 4) and torch.allclose(ys.sum(1), torch.ones(4))  # soft targets


def test_one_process_data_parallel_is_the_identity():
    from petlbench.distributed import DataParallel

    model = build("lora")
    par = DataParallel(model, torch.device("cpu"))
    x, y = torch.zeros(0, 3, 32, 32), torch.zeros(0, dtype=torch.long)
    assert par.net is model and par.reduction == "mean" and not par.joins(0) and par.joins(3)
    assert par.pad(x, y)[0] is x and par.total(7) == 7
    loss = torch.tensor(0.25)
    assert par.mean_loss(loss, 3) == (loss, 0.25, 3)


def test_fit_with_objects_is_train_with_keywords(tmp_path):
    """`train` is `fit` with the objects built from its keywords: the same numbers, log and resume state."""
    from petlbench.engine import BatchAugment, EvalPlan, OptimRecipe, ResumeFile, RunLog, fit

    x, y = quadrant_data(24)
    runs = []
    for how in ("keywords", "objects"):
        out = tmp_path / how
        out.mkdir()
        torch.manual_seed(0), np.random.seed(0)  # dropout; Mixup draws from NumPy
        model = build("repadapter")
        evals = [EvalSet("train", TensorBatches(x, y, 24, False))]
        ex = Execution(device="cpu", channels_last=False, grad_accum=2)
        if how == "keywords":
            res = train(model, TensorBatches(x, y, 8, True, seed=1), evals, epochs=3, lr=3e-3, weight_decay=1e-4,
                        warmup_epochs=1, schedule="timm_epoch", mixup=0.8, num_classes=5, label_smoothing=0.1,
                        eval_every=2, select_on="train", execution=ex, log_path=str(out / "log"),
                        resume_path=str(out / "r.pt"))
        else:
            res = fit(model, TensorBatches(x, y, 8, True, seed=1), EvalPlan(evals, 2, select_on="train"),
                      OptimRecipe(3, 3e-3, 1e-4, warmup_epochs=1, schedule="timm_epoch"),
                      BatchAugment(mixup=0.8, num_classes=5, label_smoothing=0.1), ex, RunLog(str(out / "log")),
                      ResumeFile(str(out / "r.pt")))
        state = torch.load(out / "r.pt", weights_only=True)
        runs.append((res.history, (out / "log").read_text(), state["tuned"], state["epoch"], res.best_score))
    (h1, log1, t1, e1, b1), (h2, log2, t2, e2, b2) = runs
    assert h1 == h2 and log1 == log2 and (e1, b1) == (e2, b2) == (3, max(h["train"] for h in h1))
    assert all(torch.equal(t1[n], t2[n]) for n in t1)
