"""What the actor and the critic read: an observation vector and an instruction row.

    obs = "state":  o = s (39)
    obs = "image":  o = [s | f(I_1) | ... | f(I_V)], f a frozen image encoder (aloe.vision)

Both networks split o by `layout` into a state token and one token per camera (aloe.nn), so
every algorithm, the sampler and the checkpoints see one tensor, whatever the sensors.

Since f is frozen, each stored frame is encoded once: `Observations.frames` reads the
features from a cache beside the dataset (`dataset/cache/features/`, keyed by the encoder's
identity and rebuilt when it changes) and only new video files are decoded and encoded. The
image part of s_{t+n} is the features of frame t+n of the same episode; at an episode's
last step (whose next observation is not recorded) it is the last frame's. Those rows are
terminations unless `env.timeout_is_failure` is off, which makes time-limit chunks
bootstrap from the last frame's image: the one approximation of this layout. (At a takeover
the next frame is the operator's start, possibly rewound; the policy fragment's last step
is a labelled failure there and never bootstraps, and a hand-back continues from the same
state.)

A LeRobot VLA actor (`actor_kind = "lerobot"`) in an image run reads the cameras' pixels as
well, as a VLA does: `frames` then adds each row's images (`data.PIXELS`, decoded from the
store's videos, uint8) and the row of s_{t+1}'s, and `pixels` gives a live observation's.
The critic and every compact actor read the features only.

Instructions: `instructions = "learned"` gives each task a learned embedding; "minilm" a
frozen all-MiniLM-L6-v2 sentence embedding (cached per instruction) with a trainable
projection, so one multi-task policy is told its task by the text alone.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aloe import data as D
from aloe.datasets.video import CODECS, check_codec
from aloe.envs.metaworld import MAX_CAMERAS
from aloe.envs.registry import camera_names
from aloe.envs.tasks import DEFAULT_TASK, task_dims, task_instruction, task_list
from aloe.errors import bad, require
from aloe.vision.cache import FeatureCache
from aloe.vision.encoders import IMAGE_ENCODERS, VISION_EXTRA, build_image_encoder
from aloe.vision.language import InstructionEncoder

OBS_KINDS = ("state", "image")
INSTRUCTION_KINDS = ("learned", "minilm")
FEATURE_CACHE = Path("cache") / "features"  # under the dataset directory


@dataclass
class VisionConfig:
    """Cameras and the frozen image encoder of `obs = "image"` runs."""

    cameras: tuple[str, ...] = ("corner",)
    """Cameras (up to 3, as the paper). MetaWorld's: corner, corner2, corner3, corner4,
    topview, behindGripper, gripperPOV; OGBench's: front, front_pixels (an OGBench task's
    presets start from front)."""
    image_size: int = 64
    """Square images, pixels (rendering with osmesa costs tens of ms per frame on CPU)."""
    encoder: str = "cnn"
    """Frozen image encoder: cnn (small random conv net, the CPU option) | siglip-tiny
    (random tiny SigLIP, for tests) | siglip (SigLIP from `encoder_path`, as the paper) |
    lerobot (the vision tower of the `--lerobot.pretrained` or `--lerobot.vlm` VLA, at its
    own image size; the lerobot extra)."""
    encoder_path: str | None = None
    """Local directory (or hub-cache name, never downloaded) of a SigLIP checkpoint."""
    video_codec: str = "h264"
    """Store videos as h264 (lossy, LeRobot's default) or lossless (bit-exact frames)."""

    def validate(self, prefix: str = "", task: str = DEFAULT_TASK) -> None:
        """Raise UsageError naming the first field out of range, `vision.cameras (('nope',)):
        must name ...`; `prefix` leads the name ("config field " for a run's config), `task`
        says whose cameras may be named."""
        cameras = camera_names(task)
        named = cameras is None or all(c in cameras for c in self.cameras)  # None: any name
        even = self.video_codec != "h264" or self.image_size % 2 == 0  # yuv420p halves chroma
        needs_transformers = self.encoder.startswith("siglip") or self.encoder == "lerobot"
        checks: list[tuple[str, bool, str]] = [
            (
                "cameras",
                1 <= len(self.cameras) <= MAX_CAMERAS,
                f"must name 1 to {MAX_CAMERAS} cameras",
            ),
            ("cameras", named, f"must name cameras of {task}: {', '.join(cameras or ())}"),
            ("cameras", len(set(self.cameras)) == len(self.cameras), "must not repeat a camera"),
            ("image_size", self.image_size >= 8, "must be >= 8"),
            (
                "encoder",
                self.encoder in IMAGE_ENCODERS,
                f"must be one of {', '.join(IMAGE_ENCODERS)}",
            ),
            (
                "encoder",
                not needs_transformers or importlib.util.find_spec("transformers") is not None,
                f"needs the vision extra: {VISION_EXTRA}",
            ),
            (
                "encoder_path",
                self.encoder != "siglip" or bool(self.encoder_path),
                "must be a local SigLIP directory with vision.encoder siglip",
            ),
            ("video_codec", self.video_codec in CODECS, f"must be one of {', '.join(CODECS)}"),
            ("image_size", even, "must be even with vision.video_codec h264"),
        ]
        for name, ok, allowed in checks:
            require(ok, f"{prefix}vision.{name}", getattr(self, name), allowed)
        try:
            check_codec(self.video_codec)  # this PyAV build has the encoder
        except ValueError as e:
            raise bad(f"{prefix}vision.video_codec", self.video_codec, str(e)) from None


class Observations:
    """Observation vectors and instruction rows of one run's config."""

    def __init__(self, cfg: Any, device: torch.device | str = "cpu", encoder: Any = None) -> None:
        """`encoder`: the camera encoder where the caller builds it (`--vision.encoder lerobot`,
        the run's VLA's own tower: `aloe.run.observations`); None = `vision.encoder`'s."""
        self.cfg = cfg
        self.tasks = task_list(cfg.task)
        self.instructions = [task_instruction(t, cfg.env) for t in self.tasks]
        self.cameras: tuple[str, ...] = tuple(cfg.vision.cameras) if cfg.obs == "image" else ()
        # the cameras whose pixels the actor reads (a VLA's; see the module docstring)
        self.pixel_cameras = self.cameras if cfg.actor_kind == "lerobot" else ()
        # what reading features cost (decode + encode of new video files, cache reads)
        self.feature_log = dict.fromkeys(("features_s", "frames_encoded", "frames_cached"), 0.0)
        self.encoder: Any = encoder
        if self.cameras and encoder is None:
            v = cfg.vision
            if v.encoder == "lerobot":  # the policies layer builds it, above this one
                raise ValueError("the lerobot tower is built by aloe.run.observations")

            self.encoder = build_image_encoder(
                v.encoder, path=v.encoder_path, device=device, image_size=v.image_size
            )

    @property
    def layout(self) -> tuple[int, ...]:
        """Widths of [state, camera_1, ..., camera_V] in the observation vector."""
        feat = self.encoder.feature_dim if self.encoder is not None else 0
        return (task_dims(self.cfg.task, self.cfg.env).state, *(feat for _ in self.cameras))

    @property
    def dim(self) -> int:
        return sum(self.layout)

    def task_row(self, instruction: str) -> int:
        """The instruction's row; a single-task run reads any instruction as its own task
        (its policy can be run on another task, e.g. `aloe collect --policy RUN`)."""
        if len(self.instructions) == 1:
            return 0
        try:
            return self.instructions.index(instruction)
        except ValueError:
            raise ValueError(
                f"instruction {instruction!r} is not one of this run's tasks {self.tasks}"
            ) from None

    def vector(self, obs: dict[str, Any]) -> np.ndarray:
        """One environment observation as the vector the networks read."""
        state = np.asarray(obs["state"], dtype=np.float32)
        if not self.cameras:
            return state
        if "images" not in obs:
            raise ValueError(f"this run sees cameras {self.cameras}: the observation has no images")
        feats = [self.encoder.encode(np.asarray(obs["images"][c])[None])[0] for c in self.cameras]
        return np.concatenate([state, *feats]).astype(np.float32)

    def frames(self, store: Any, columns: list[str]) -> D.Frames:
        """The store's frames with observation vectors in place of states, and task_index as
        rows of this run's instruction list."""
        frames = store.load_frames(columns)
        rows = np.array([self.task_row(t) for t in store.tasks()], dtype=np.int64)
        if len(frames[D.TASK]):
            frames[D.TASK] = rows[frames[D.TASK]]
        if not self.cameras:
            return D.Frames(frames)
        feats = np.concatenate([self.features(store, c) for c in self.cameras], axis=1)
        index = frames[D.INDEX]
        following = np.r_[index[1:], index[-1:]]
        last = D.run_ends(frames[D.EPISODE])
        nxt = np.where(last, index, following)  # frame t+1 of the episode; the last: itself
        frames[D.STATE] = np.concatenate([frames[D.STATE], feats[index]], axis=1)
        frames[D.NEXT_STATE] = np.concatenate([frames[D.NEXT_STATE], feats[nxt]], axis=1)
        if self.pixel_cameras:
            images = [store.load_images(D.image_key(c)) for c in self.pixel_cameras]
            frames[D.PIXELS] = np.stack(images, axis=1)[index]
            frames[D.NEXT_PIXELS_ROW] = np.searchsorted(index, nxt)
        return D.Frames(frames)

    def pixels(self, obs: dict[str, Any]) -> np.ndarray | None:
        """A live observation's images (V, H, W, 3) uint8 for an actor that reads pixels, in
        the run's camera order; None when the actor reads none."""
        if not self.pixel_cameras:
            return None
        if "images" not in obs:
            raise ValueError(
                f"this run's VLA sees cameras {self.pixel_cameras}: the observation has no images"
            )
        return np.stack([np.asarray(obs["images"][c], dtype=np.uint8) for c in self.pixel_cameras])

    def features(self, store: Any, camera: str) -> np.ndarray:
        """Frozen features (N, F) of every stored frame of `camera`, by global index."""
        start = time.perf_counter()
        key = D.image_key(camera)
        cache = FeatureCache(store.root / FEATURE_CACHE, self.encoder)
        videos = store.video_files(key)
        new = sum(len(f.index) for f in videos if not cache.path(camera, f.file_id).is_file())
        files = [(f.file_id, f.index, _loader(store, key, f.file_id)) for f in videos]
        out = cache.features(camera, files)
        self.cache_stats = {"hits": cache.hits, "misses": cache.misses}  # files, for the log
        self.feature_log["features_s"] += time.perf_counter() - start
        self.feature_log["frames_encoded"] += new
        self.feature_log["frames_cached"] += len(out) - new
        return out

    def instruction_features(self, cache_dir: Path | None) -> torch.Tensor | None:
        """Frozen sentence embeddings (num_tasks, E) of the instructions, or None (learned)."""
        if self.cfg.instructions == "learned":
            return None

        enc = InstructionEncoder()
        path = None if cache_dir is None else cache_dir / "instructions.npz"
        emb = enc.encode_cached(self.instructions, path) if path else enc.encode(self.instructions)
        return torch.as_tensor(np.asarray(emb), dtype=torch.float32)


def _loader(store: Any, key: str, file_id: str) -> Any:
    return lambda: store.read_video(key, file_id)
