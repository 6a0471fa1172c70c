"""Time the feature cache: encoding frames from scratch (miss) against reading them back (hit).

    python benchmarks/bench_features.py [--frames 2000] [--image-size 64] [--encoder cnn]
    python benchmarks/bench_features.py --store RUN/dataset --camera corner [--updates 600]

Frames are random uint8, synthesised per file inside `load_frames` (standing in for video
decoding), so no dataset is needed; with --store they are a real store's videos (decoded
with PyAV), and the run also times what the cache replaces during training: encoding the
frames of every sampled batch (s_t and s_{t+n} for critic steps, s_t for actor steps) for
`--updates` steps of `--batch-size`, extrapolated from 5 timed batches. Both passes run in one process on the same cache
directory (a temporary one unless --root is given); the hit pass opens a new FeatureCache,
as a second training run would. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from aloe.vision import IMAGE_ENCODERS, FeatureCache, FrameFile, build_image_encoder


def synthetic_files(frames: int, files: int, image_size: int) -> list[FrameFile]:
    """`files` files of consecutive frames; each decodes to random uint8 (n, S, S, 3)."""
    bounds = np.linspace(0, frames, files + 1).astype(int)

    def loader(i: int, n: int) -> Callable[[], np.ndarray]:
        def load() -> np.ndarray:
            rng = np.random.default_rng(i)
            return rng.integers(0, 256, (n, image_size, image_size, 3), dtype=np.uint8)

        return load

    return [
        (f"chunk-000/file-{i:03d}", np.arange(lo, hi), loader(i, hi - lo))
        for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
    ]


def store_files(root: Path, camera: str) -> list[FrameFile]:
    """A real store's video files of `camera`, decoded on demand."""
    from aloe.datasets.store import EpisodeStore

    store = EpisodeStore.open(root)
    key = f"observation.images.{camera}"

    def loader(file_id: str) -> Callable[[], np.ndarray]:
        return lambda: store.read_video(key, file_id)

    return [(f.file_id, f.index, loader(f.file_id)) for f in store.video_files(key)]


def in_loop_seconds(encoder: object, files: list[FrameFile], args: argparse.Namespace) -> float:
    """Seconds to encode every update's batch frames (critic: 2 per row, actor: 1) instead of
    reading cached features, from 5 timed batches of already decoded frames."""
    frames = np.concatenate([load() for _, _, load in files[:3]])
    rows = np.random.default_rng(0).integers(0, len(frames), (5, 2 * args.batch_size))
    t0 = time.perf_counter()
    for r in rows:
        encoder.encode(frames[r])  # type: ignore[attr-defined]
    per_frame = (time.perf_counter() - t0) / rows.size
    critic, actor = 2 * args.updates // 3, args.updates // 3  # the default preset's 400 / 200
    return round(per_frame * args.batch_size * (2 * critic + actor), 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--frames", type=int, default=2000)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--encoder", choices=IMAGE_ENCODERS, default="cnn")
    p.add_argument("--path", default=None, help="SigLIP directory or cached repo id")
    p.add_argument("--files", type=int, default=20, help="video files the frames are split into")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--root", type=Path, default=None, help="cache directory (default: a temp dir)")
    p.add_argument("--store", type=Path, default=None, help="a store with videos (not synthetic)")
    p.add_argument("--camera", default="corner")
    p.add_argument("--updates", type=int, default=600, help="critic + actor steps per iteration")
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args()

    encoder = build_image_encoder(args.encoder, args.path, args.device, args.image_size)
    files = (
        store_files(args.store, args.camera)
        if args.store
        else synthetic_files(args.frames, args.files, args.image_size)
    )
    args.frames, args.files = sum(len(f[1]) for f in files), len(files)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp)
        t0 = time.perf_counter()
        miss_cache = FeatureCache(root, encoder)
        miss = miss_cache.features("cam", files)
        miss_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        hit_cache = FeatureCache(root, encoder)
        hit = hit_cache.features("cam", files)
        hit_s = time.perf_counter() - t0

    assert (miss_cache.misses, hit_cache.hits, hit_cache.misses) == (args.files, args.files, 0)
    assert np.array_equal(miss, hit)
    in_loop = in_loop_seconds(encoder, files, args) if args.store else None
    print(
        json.dumps(
            {
                **(
                    {
                        "in_training_loop_s": in_loop,
                        "updates": args.updates,
                        "batch_size": args.batch_size,
                    }
                    if in_loop
                    else {}
                ),
                "encoder": args.encoder,
                "device": args.device,
                "torch_threads": torch.get_num_threads(),
                "frames": args.frames,
                "files": args.files,
                "image_size": args.image_size,
                "feature_dim": encoder.feature_dim,
                "miss_s": round(miss_s, 4),
                "hit_s": round(hit_s, 4),
                "miss_frames_per_s": round(args.frames / miss_s, 1),
                "hit_frames_per_s": round(args.frames / hit_s, 1),
                "speedup": round(miss_s / hit_s, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
