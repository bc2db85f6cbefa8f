"""The decoded-split cache (decode.decode_all_cached): a hit decodes no image and returns the same tensors; every
input that sets the pixels or labels is in the key; concurrent writers leave one whole entry and readers never
see a partial one; a damaged entry is decoded again and rewritten; load_split goes through it."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from petlbench import decode
from petlbench.data import DataError, Sample
from petlbench.decode import decode_all, decode_all_cached, decode_cache_dir, decode_cache_key, load_decoded

SIZE = 8


def write_images(folder, n: int, seed: int = 0, side: int = 20) -> list[Sample]:
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    samples = []
    for i in range(n):
        path = os.path.join(folder, f"{i:03d}.png")
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
        samples.append(Sample(path, i % 3, f"list.txt:{i + 1}"))
    return samples


def no_decoding(monkeypatch):
    def refuse(path):
        raise AssertionError(f"decoded {path}: the cache was not used")

    monkeypatch.setattr(decode, "load_rgb", refuse)


def entries(folder) -> list[str]:
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_a_second_load_decodes_nothing_and_returns_the_same_tensors(tmp_path, monkeypatch):
    samples, cache = write_images(tmp_path / "img", 10), str(tmp_path / "cache")
    first = decode_all_cached(samples, SIZE, cache_dir=cache)
    fresh = decode_all(samples, SIZE)
    assert torch.equal(first.images, fresh.images) and torch.equal(first.labels, fresh.labels)
    assert entries(cache) == [decode_cache_key(samples, SIZE) + ".npz"]
    no_decoding(monkeypatch)
    again = decode_all_cached(samples, SIZE, cache_dir=cache)
    assert again.images.dtype == torch.uint8 and again.images.shape == (10, 3, SIZE, SIZE)
    assert torch.equal(again.images, fresh.images) and torch.equal(again.labels, fresh.labels)
    with pytest.raises(DataError, match="the cache was not used"):  # another size is another entry
        decode_all_cached(samples, SIZE * 2, cache_dir=cache)


def test_skipped_images_come_back_from_the_cache(tmp_path, monkeypatch, caplog):
    samples, cache = write_images(tmp_path / "img", 6), str(tmp_path / "cache")
    with open(samples[2].path, "wb") as f:
        f.write(b"not a png")
    first = decode_all_cached(samples, SIZE, on_bad="skip", cache_dir=cache)
    no_decoding(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="petlbench.decode"):
        again = decode_all_cached(samples, SIZE, on_bad="skip", cache_dir=cache)
    assert len(again) == 5 and [p for p, _ in again.bad.items] == [samples[2].path] == [p for p, _ in first.bad.items]
    assert torch.equal(again.images, first.images) and samples[2].path in caplog.text
    with pytest.raises(DataError, match="the cache was not used"):  # "fail" is never served a skipping entry
        decode_all_cached(samples, SIZE, on_bad="fail", cache_dir=cache)


def test_the_key_covers_the_list_the_files_and_the_transform(tmp_path):
    samples = write_images(tmp_path / "img", 5)
    key = decode_cache_key(samples, SIZE)
    assert decode_cache_key(list(samples), SIZE) == key  # a function of its inputs alone
    relabelled = [Sample(s.path, (s.label + 1) % 3 if i == 1 else s.label, s.source) for i, s in enumerate(samples)]
    others = {
        "relabelled": decode_cache_key(relabelled, SIZE),
        "fewer": decode_cache_key(samples[:-1], SIZE),
        "reordered": decode_cache_key(samples[::-1], SIZE),
        "size": decode_cache_key(samples, SIZE + 1),
        "interpolation": decode_cache_key(samples, SIZE, "bilinear"),
        "crop": decode_cache_key(samples, SIZE, crop_pct=0.875),
        "on_bad": decode_cache_key(samples, SIZE, on_bad="skip"),
    }
    assert len({key, *others.values()}) == len(others) + 1, others
    st = os.stat(samples[0].path)  # rewritten in place with the same size: the modification time tells
    os.utime(samples[0].path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert decode_cache_key(samples, SIZE) != key
    moved = tmp_path / "copy"
    os.rename(tmp_path / "img", moved)
    assert decode_cache_key([Sample(str(moved / os.path.basename(s.path)), s.label) for s in samples], SIZE) != key


def test_a_changed_image_is_decoded_again(tmp_path):
    samples, cache = write_images(tmp_path / "img", 4), str(tmp_path / "cache")
    before = decode_all_cached(samples, SIZE, cache_dir=cache)
    Image.fromarray(np.full((30, 30, 3), 7, dtype=np.uint8)).save(samples[1].path)
    after = decode_all_cached(samples, SIZE, cache_dir=cache)
    assert torch.equal(after.images, decode_all(samples, SIZE).images)
    assert not torch.equal(after.images[1], before.images[1]) and torch.equal(after.images[0], before.images[0])
    assert len(entries(cache)) == 2


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "not_npz", "wrong_count"])
def test_a_damaged_entry_is_rebuilt(tmp_path, damage, caplog):
    samples, cache = write_images(tmp_path / "img", 8), str(tmp_path / "cache")
    decode_all_cached(samples, SIZE, cache_dir=cache)
    path = os.path.join(cache, entries(cache)[0])
    whole = open(path, "rb").read()
    with open(path, "wb") as f:
        if damage == "truncate":
            f.write(whole[:len(whole) // 2])
        elif damage == "flip_byte":  # inside the images' bytes: the size is right, the CRC-32 is not
            at = whole.index(decode_all(samples, SIZE).images.numpy().tobytes()[:64]) + 100
            f.write(whole[:at] + bytes([whole[at] ^ 0xFF]) + whole[at + 1:])
        elif damage == "not_npz":
            f.write(b"\x00" * len(whole))
        else:  # whole, but not what its meta says it holds
            fresh = decode_all(samples, SIZE)
            np.savez(f, images=fresh.images.numpy(), labels=fresh.labels.numpy()[:-1], bad=np.array("[]"),
                     meta=np.array(json.dumps({"n": len(samples), "shape": list(fresh.images.shape)})))
    assert load_decoded(path) is None
    with caplog.at_level(logging.WARNING, logger="petlbench.decode"):
        data = decode_all_cached(samples, SIZE, cache_dir=cache)
    assert "decoding again" in caplog.text
    assert torch.equal(data.images, decode_all(samples, SIZE).images)
    assert load_decoded(path) is not None and entries(cache) == [os.path.basename(path)]  # rewritten whole


WRITER = """
import json, os, sys, time
import torch
from petlbench import decode
from petlbench.data import Sample
samples, cache, go = [Sample(p, l) for p, l in json.loads(sys.argv[1])], sys.argv[2], sys.argv[3]
g = torch.Generator().manual_seed(int(sys.argv[4]))
big = decode.TensorData(torch.randint(0, 256, (1500, 3, 32, 32), dtype=torch.uint8, generator=g),
                        torch.randint(0, 9, (1500,), generator=g))
while not os.path.exists(go):  # both writers start together
    time.sleep(0.01)
for _ in range(4):  # 4.6 MB entries written in turn: a reader would catch one half-written
    decode.save_decoded(os.path.join(cache, "big.npz"), big)
print(decode.decode_all_cached(samples, 8, cache_dir=cache).images.sum().item())  # both miss, both write
"""


def test_concurrent_writers_leave_one_whole_entry(tmp_path):
    samples, cache = write_images(tmp_path / "img", 40), str(tmp_path / "cache")
    path, go = os.path.join(cache, decode_cache_key(samples, SIZE) + ".npz"), str(tmp_path / "go")
    listed = json.dumps([(s.path, s.label) for s in samples])
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, listed, cache, go, str(seed)], stdout=subprocess.PIPE,
                                text=True) for seed in (1, 2)]
    open(go, "w").close()
    reads = 0
    while any(w.poll() is None for w in writers):  # a reader meanwhile: an entry that exists is always whole
        for entry in (os.path.join(cache, "big.npz"), path):
            if os.path.exists(entry):
                assert load_decoded(entry) is not None
                reads += 1
        time.sleep(0.002)
    outputs = [w.communicate(timeout=120)[0].strip() for w in writers]
    assert [w.returncode for w in writers] == [0, 0] and reads
    expected = decode_all(samples, SIZE)
    assert outputs == [str(expected.images.sum().item())] * 2
    assert entries(cache) == sorted(["big.npz", os.path.basename(path)])  # no temporary file left
    assert torch.equal(load_decoded(path).images, expected.images)


def test_the_cache_folder_and_off(tmp_path, monkeypatch):
    monkeypatch.delenv("PETLBENCH_DECODE_CACHE", raising=False)
    monkeypatch.setenv("PETLBENCH_CACHE", str(tmp_path / "base"))
    assert decode_cache_dir() == str(tmp_path / "base" / "decoded")
    monkeypatch.setenv("PETLBENCH_DECODE_CACHE", str(tmp_path / "elsewhere"))
    assert decode_cache_dir() == str(tmp_path / "elsewhere")
    monkeypatch.setenv("PETLBENCH_DECODE_CACHE", "off")
    assert decode_cache_dir() is None


@pytest.mark.parametrize("setting", ["on", "off"])
def test_load_split_reads_through_the_cache(tmp_path, monkeypatch, setting):
    from petlbench.engine import Execution
    from petlbench.loaders import load_split
    from petlbench.task import TASKS

    task = TASKS.get("mini/digits")
    samples = write_images(tmp_path / "root" / "digits" / "images", 12)
    with open(tmp_path / "root" / "digits" / "test.txt", "w") as f:
        f.writelines(f"images/{os.path.basename(s.path)} {s.label}\n" for s in samples)
    cache = tmp_path / "cache"
    monkeypatch.setenv("PETLBENCH_DECODE_CACHE", str(cache) if setting == "on" else "off")
    p, ex, cpu = task.protocol, Execution(num_workers=0), torch.device("cpu")

    def test_split():
        batches, _ = load_split(task, str(tmp_path / "root"), "test", p, ex, False, cpu)
        return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])

    images, labels = test_split()
    assert labels.tolist() == [s.label for s in samples]
    if setting == "off":
        assert not cache.exists()
        return
    assert len(entries(cache)) == 1
    no_decoding(monkeypatch)
    again, labels_again = test_split()
    assert torch.equal(again, images) and torch.equal(labels_again, labels)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_hit_leaves_torch_s_generator_where_a_decode_leaves_it(tmp_path, monkeypatch, workers):
    # A DataLoader draws its workers' base seed from the global generator; a run's dropout draws after it.
    samples, cache = write_images(tmp_path / "img", 6), str(tmp_path / "cache")
    torch.manual_seed(0)
    decode_all_cached(samples, SIZE, num_workers=workers, cache_dir=cache)  # a miss: decode_all's DataLoader
    after_decode = torch.rand(4)
    torch.manual_seed(0)
    no_decoding(monkeypatch)
    decode_all_cached(samples, SIZE, num_workers=workers, cache_dir=cache)  # a hit
    assert torch.equal(torch.rand(4), after_decode)
