"""Tuned files and the atomic writer: a damaged tensor payload and a file tuned on other backbone weights are
errors naming the file (files written before these checks still load); files get the umask's mode; temporary
files left by dead writers are cleaned; plots never share a temporary file."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

import petlbench
from petlbench.atomic import atomic_write_text, clean_stale_temps, is_stale_temp
from petlbench.errors import CheckpointError
from petlbench.weights import resolve_weights

from tiny import build, randomize_trainable


def _header_len(path: str) -> int:
    with open(path, "rb") as f:
        return 8 + int.from_bytes(f.read(8), "little")


def test_a_flipped_bit_in_the_tensors_is_an_error_naming_the_file(tmp_path):
    model = build("lora")
    randomize_trainable(model)
    path = str(tmp_path / "t.safetensors")
    petlbench.save_tuned(model, path)
    data = bytearray(open(path, "rb").read())
    start = _header_len(path)
    data[start + (len(data) - start) // 2] ^= 0x40  # one bit of one float in the middle of the payload
    open(path, "wb").write(bytes(data))
    with pytest.raises(CheckpointError, match=r"t\.safetensors: the stored tensors do not match the checksum"):
        petlbench.load_tuned(build("lora"), path)


def _mini(pretrained: bool):
    name, weights = resolve_weights("petlbench_vit_mini", "petlbench:vit_mini_procedural")
    return petlbench.create_model(name, method="lora", num_classes=6, pretrained=weights if pretrained else False)


def test_a_file_tuned_on_pretrained_weights_refuses_a_random_backbone(tmp_path):
    tuned = _mini(True)
    randomize_trainable(tuned)
    path = str(tmp_path / "lora.safetensors")
    petlbench.save_tuned(tuned, path)
    with pytest.raises(CheckpointError, match=r"lora\.safetensors: tuned on other backbone weights"):
        petlbench.load_tuned(_mini(False), path)
    same = petlbench.load_tuned(_mini(True), path)  # the weights it was tuned on: loads, tensor for tensor
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(same.eval()(x), tuned.eval()(x))


def test_a_file_written_before_the_checks_still_loads(tmp_path):
    """Files without sha256 / frozen_sha256 (petlbench before these fields) load as before."""
    from safetensors.torch import load_file, safe_open, save_file

    model = build("repadapter")
    randomize_trainable(model)
    path = str(tmp_path / "old.safetensors")
    petlbench.save_tuned(model, path)
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    assert {"sha256", "frozen_sha256"} <= set(meta)
    old = {k: v for k, v in meta.items() if k not in ("sha256", "frozen_sha256", "weights")}
    save_file(load_file(path), path, metadata=old)
    fresh = build("repadapter")
    torch.manual_seed(123)  # a different random backbone: nothing recorded to tell, so it loads
    other = build("repadapter")
    petlbench.load_tuned(fresh, path)
    petlbench.load_tuned(other, path)
    assert all(torch.equal(p, dict(model.named_parameters())[n]) for n, p in fresh.named_parameters()
               if p.requires_grad)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_files_get_the_umask_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = tmp_path / "r.json"
        atomic_write_text(str(path), "{}\n")
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~umask) == (plain.stat().st_mode & 0o777)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporary_files_are_cleaned_when_the_folder_is_written(tmp_path):
    from petlbench import atomic

    host = atomic.host_name()
    dead = tmp_path / f".tmp-{_dead_pid()}@{host}-abcd1234.json"  # a writer killed mid-write
    old = tmp_path / ".tmp-k2j4h5g6.json"  # an older petlbench's name, two hours old
    alive = tmp_path / f".tmp-{os.getpid()}@{host}-beef0000.json"  # being written right now
    elsewhere = tmp_path / f".tmp-{_dead_pid()}@another-host-0000cafe.json"  # pid unknowable on another host
    for p in (dead, old, alive, elsewhere):
        p.write_text("half")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert is_stale_temp(str(dead)) and is_stale_temp(str(old))
    assert not is_stale_temp(str(alive)) and not is_stale_temp(str(elsewhere))
    atomic._last_clean.clear()
    atomic_write_text(str(tmp_path / "rec.json"), "{}\n")
    left = sorted(os.listdir(tmp_path))
    assert left == sorted([alive.name, elsewhere.name, "rec.json"])
    os.utime(elsewhere, (time.time() - 7200, time.time() - 7200))
    assert clean_stale_temps(str(tmp_path)) == [str(elsewhere)]


def test_plots_do_not_share_a_temporary_file(tmp_path):
    """`petlbench plot` twice at once: each writes its own temporary file (the former fixed `<stem>.tmp.png` is
    taken here by a folder, as by the other process's half-written file) and renames it."""
    from petlbench.plots import pyplot, save

    plt = pyplot()
    stem = str(tmp_path / "acc")
    os.makedirs(stem + ".tmp.png")
    os.makedirs(stem + ".tmp.pdf")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    paths = save(fig, stem)
    assert paths == [stem + ".png", stem + ".pdf"]
    assert open(stem + ".png", "rb").read(4) == b"\x89PNG" and open(stem + ".pdf", "rb").read(4) == b"%PDF"
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]
