"""Video clips for the video benchmarks (SSv2, HMDB51), decoded with decord, sampled and cropped the way the
VideoMAE / AdaptFormer fine-tuning code does.

`sample_indices` picks the frames of one clip; `VideoDataset` decodes them and returns uint8 tensors: one
(3, T, S, S) clip for training, or all test views (V, 3, T, S, S), V = test_clips x test_crops, whose softmax
scores the evaluation averages per video. Bad input (a missing file, a file that does not decode, too few
frames) fails naming the path and its list file:line, or is skipped exactly like `petlbench.decode.ImageDataset`
items (the runner checks missing files for a whole split first). In DataLoader workers the failure travels as a
`petlbench.data.WorkerFailure`, so the main process raises the same one-line DataError (batch with
`collate_skip`).
"""
from __future__ import annotations

import os
import random
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from petlbench.data import BadImages, OnBad, Sample, bad_input


def sample_indices(n_frames: int, num_frames: int, mode: str, stride: int, train: bool,
                   rng: random.Random | None = None, clip: int = 0, num_clips: int = 1) -> list[int]:
    """The `num_frames` frame indices (each in [0, n_frames)) of one clip of a video of `n_frames` frames.

    mode "segment" (SSv2, VideoMAE's ssv2.py): the video is cut into num_frames equal segments and one frame
      is taken from each: a random one when `train`, else the segment's middle; with num_clips > 1 at test, clip
      k takes the frame k/num_clips of the way into each segment (VideoMAE's 2-clip SSv2 test: starts and
      middles). A video with fewer than num_frames frames has segments shorter than a frame, so frames repeat
      in order.
    mode "dense" (HMDB51, Kinetics, VideoMAE's kinetics.py): num_frames frames `stride` apart, a window of
      num_frames * stride frames, starting at a random offset when `train`; at test clip k of num_clips starts
      at evenly spaced positions from the start to the end of the video (one clip: the centre). A video
      shorter than the window starts at 0 and its indices are clamped to the last frame (the clip is padded by
      repeating it), as VideoMAE pads.

    `stride` is ignored by "segment". Randomness comes only from `rng` (the `random` module when None, which
    torch seeds per DataLoader worker), so a seeded rng gives the same indices again."""
    if n_frames < 1 or num_frames < 1 or stride < 1 or not 0 <= clip < num_clips:
        raise ValueError(f"sample_indices: n_frames={n_frames}, num_frames={num_frames}, stride={stride}, "
                         f"clip={clip} of {num_clips}")
    rng = rng or random
    last = n_frames - 1
    if mode == "segment":
        seg = n_frames / num_frames
        if train:
            if n_frames >= num_frames:  # VideoMAE: integer segments, a random frame in each
                avg = n_frames // num_frames
                return [i * avg + rng.randrange(avg) for i in range(num_frames)]
            return [min(int(seg * (i + rng.random())), last) for i in range(num_frames)]
        shift = 0.5 if num_clips == 1 else clip / num_clips
        return [min(int(seg * (i + shift)), last) for i in range(num_frames)]
    if mode == "dense":
        window = num_frames * stride
        if train:
            start = rng.randrange(n_frames - window + 1) if n_frames > window else 0
        else:
            # VideoMAE's test: take every stride-th frame, then clip k starts k/(num_clips-1) of the way
            # through the frames left over after one clip.
            spare = max(-(-n_frames // stride) - num_frames, 0)
            pos = spare // 2 if num_clips == 1 else int(clip * spare / (num_clips - 1))
            start = pos * stride
        return [min(start + j * stride, last) for j in range(num_frames)]
    raise ValueError(f"sample_indices: mode {mode!r}; expected 'segment' or 'dense'")


def _resize_short(frames: torch.Tensor, size: int, interpolation: str) -> torch.Tensor:
    """(T, 3, H, W) uint8 -> the same with the short side `size`, aspect ratio kept."""
    from torchvision.transforms.functional import InterpolationMode, resize

    h, w = frames.shape[-2:]
    if min(h, w) == size:
        return frames
    new = (size, max(size, round(w * size / h))) if h <= w else (max(size, round(h * size / w)), size)
    return resize(frames, list(new), interpolation=InterpolationMode(interpolation), antialias=True)


def _spatial_crops(frames: torch.Tensor, size: int, n: int) -> list[torch.Tensor]:
    """`n` size x size crops of (T, 3, H, W) whose short side is `size`: one centre crop, or n crops evenly
    spaced along the long side (3: left/centre/right or top/centre/bottom, VideoMAE's test crops)."""
    h, w = frames.shape[-2:]
    if n == 1:
        top, left = (h - size) // 2, (w - size) // 2
        return [frames[..., top:top + size, left:left + size]]
    crops = []
    for k in range(n):
        if h >= w:
            top = int(k * (h - size) / (n - 1))
            crops.append(frames[..., top:top + size, :size])
        else:
            left = int(k * (w - size) / (n - 1))
            crops.append(frames[..., :size, left:left + size])
    return crops


class VideoDataset(Dataset):
    """Decoded clips of `samples` under `protocol` (petlbench.task.Protocol: num_frames, frame_sampling,
    frame_stride, test_clips, test_crops, img_size, interpolation).

    train: (uint8 (3, T, S, S), label): one clip, short side scaled to S*256/224, a random S x S crop, and a
    random horizontal flip unless `flip` is False (SSv2, whose labels say "left to right").
    test: (uint8 (V, 3, T, S, S), label), V = test_clips x test_crops, clip-major: the short side scaled to S,
    then test_crops crops along the long side, for each of test_clips clips.

    Bad input (a missing file, a file decord cannot decode, fewer than `min_frames` frames) raises DataError
    naming the path and the sample's list file:line (on_bad="fail"), or yields (None, path, reason) that
    `petlbench.decode.collate_skip` drops and reports (on_bad="skip"). A video shorter than a clip is not bad
    input: its indices are clamped (see `sample_indices`)."""

    def __init__(self, samples: Sequence[Sample], protocol, train: bool, on_bad: OnBad = "fail",
                 flip: bool = True, min_frames: int = 1):
        self.samples, self.protocol, self.train, self.on_bad = list(samples), protocol, train, on_bad
        self.flip, self.min_frames = flip, max(1, min_frames)
        self.bad = BadImages()

    def __len__(self) -> int:
        return len(self.samples)

    def _indices(self, n: int) -> list[list[int]]:
        p = self.protocol
        if self.train:
            return [sample_indices(n, p.num_frames, p.frame_sampling, p.frame_stride, True)]
        return [sample_indices(n, p.num_frames, p.frame_sampling, p.frame_stride, False, clip=k,
                               num_clips=p.test_clips) for k in range(p.test_clips)]

    def _decode(self, path: str) -> tuple[torch.Tensor, list[list[int]]]:
        """Every clip's frames, decoded once: (F, 3, H, W) uint8 for the distinct indices, and each clip's
        positions in it. A fresh reader per item, so the dataset pickles into DataLoader workers."""
        import decord

        if not os.path.isfile(path):
            raise FileNotFoundError("file does not exist")
        vr = decord.VideoReader(path, num_threads=1)
        n = len(vr)
        if n < self.min_frames:
            raise _TooShort(f"{n} frames, fewer than {self.min_frames}")
        clips = self._indices(n)
        distinct = sorted({i for c in clips for i in c})
        where = {f: j for j, f in enumerate(distinct)}
        frames = torch.from_numpy(vr.get_batch(distinct).asnumpy()).permute(0, 3, 1, 2)  # (F, 3, H, W)
        return frames, [[where[i] for i in c] for c in clips]

    def __getitem__(self, i: int):
        s = self.samples[i]
        try:
            frames, clips = self._decode(s.path)
        except Exception as e:  # decord raises DECORDError (and RuntimeError) for files it cannot read
            known = isinstance(e, (_TooShort, FileNotFoundError))
            reason = str(e) if known else f"video does not decode: {_first_line(e)}"
            if self.on_bad == "fail":
                return bad_input(f"{s.path} ({s.source}): {reason}")
            return None, s.path, reason
        size, p = self.protocol.img_size, self.protocol
        if self.train:
            frames = _resize_short(frames, round(size * 256 / 224), p.interpolation)
            h, w = frames.shape[-2:]
            top, left = random.randint(0, h - size), random.randint(0, w - size)
            clip = frames[clips[0], :, top:top + size, left:left + size]
            if self.flip and random.random() < 0.5:
                clip = clip.flip(-1)
            return clip.permute(1, 0, 2, 3).contiguous(), s.label  # (3, T, S, S)
        crops = _spatial_crops(_resize_short(frames, size, p.interpolation), size, p.test_crops)
        views = [crop[c].permute(1, 0, 2, 3) for c in clips for crop in crops]
        return torch.stack(views), s.label  # (V, 3, T, S, S)


def _first_line(e: Exception) -> str:
    """decord's messages carry a C++ stack trace after the first line."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


class _TooShort(Exception):
    """Fewer frames than `min_frames`: bad input with the frame count as the reason."""
