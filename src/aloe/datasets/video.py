"""Camera images as mp4 videos, as LeRobotDataset v3 stores them: codecs, info.json features,
episodes-meta columns, and encoding and decoding with PyAV.

Each `append` writes one mp4 per camera with the frames of its episodes back to back; an
episode's `videos/<key>/from_timestamp` and `to_timestamp` say where it lies in that file.
PyAV is imported by the functions that use it, so that importing aloe does not load it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np
import pyarrow as pa


class VideoCodec(NamedTuple):
    """How images are encoded: an FFmpeg encoder, what LeRobot's info.json calls the result."""

    encoder: str  # the encoder PyAV runs
    codec: str  # the stream's codec (info.json `video.codec`)
    pix_fmt: str  # pixels as encoded (info.json `video.pix_fmt`)
    options: dict[str, str]  # encoder options


CODECS: dict[str, VideoCodec] = {
    # Small files; about 1 grey level of error on smooth images (crf 20, 4:2:0 chroma).
    "h264": VideoCodec("libx264", "h264", "yuv420p", {"crf": "20"}),
    # Decodes bit-exact (RGB at qp 0), ~10× larger.
    "lossless": VideoCodec("libx264rgb", "h264", "rgb24", {"qp": "0"}),
}


@dataclass(frozen=True)
class VideoFile:
    """One mp4 of a camera and the global frame indices (LeRobot `index`) of its frames."""

    file_id: str  # "chunk-000/file-003": names the file for good, the store never reuses it
    path: Path
    index: np.ndarray  # (n,) int64, in the file's frame order


def check_codec(name: str) -> VideoCodec:
    """The codec called `name`; ValueError if there is none or this PyAV build lacks it."""
    if name not in CODECS:
        raise ValueError(f"video_codec {name!r}: expected one of {list(CODECS)}")
    import av

    codec = CODECS[name]
    if codec.encoder not in av.codecs_available:
        raise ValueError(f"video_codec {name!r}: this PyAV build has no {codec.encoder} encoder")
    return codec


def video_feature(height: int, width: int, fps: float, codec: str) -> dict[str, Any]:
    """info.json's entry for one camera, as LeRobot v3 writes it."""
    spec = check_codec(codec)
    if height <= 0 or width <= 0:
        raise ValueError(f"image shape ({height}, {width}) must be positive")
    if spec.pix_fmt == "yuv420p" and (height % 2 or width % 2):
        raise ValueError(f"{codec} video needs an even height and width, not ({height}, {width})")
    return {
        "dtype": "video",
        "shape": [height, width, 3],
        "names": ["height", "width", "channels"],
        "info": {
            "video.height": height,
            "video.width": width,
            "video.codec": spec.codec,
            "video.pix_fmt": spec.pix_fmt,
            "video.is_depth_map": False,
            "video.fps": fps,
            "video.channels": 3,
            "has_audio": False,
        },
    }


def is_video(feature: dict[str, Any]) -> bool:
    return isinstance(feature, dict) and feature.get("dtype") == "video"


def codec_of(feature: dict[str, Any]) -> str | None:
    """The name in CODECS a video feature was written with; None if it is none of them."""
    info = feature.get("info") or {}
    for name, spec in CODECS.items():
        if (info.get("video.codec"), info.get("video.pix_fmt")) == (spec.codec, spec.pix_fmt):
            return name
    return None


def feature_problem(feature: dict[str, Any]) -> str | None:
    """What is wrong with a video feature of info.json, or None."""
    shape = feature.get("shape")
    if not isinstance(shape, list) or len(shape) != 3 or shape[2] != 3:
        return f"shape {shape} is not [height, width, 3]"
    if not all(isinstance(n, int) and n > 0 for n in shape):
        return f"shape {shape} is not [height, width, 3]"
    if codec_of(feature) is None:
        return f"codec {feature.get('info')} is not one of {list(CODECS)}"
    return None


def meta_fields(key: str) -> list[tuple[str, pa.DataType]]:
    """The episodes-meta columns LeRobot v3 keeps per episode and video key."""
    ints = [(f"videos/{key}/{name}", pa.int64()) for name in ("chunk_index", "file_index")]
    times = [(f"videos/{key}/{name}", pa.float64()) for name in ("from_timestamp", "to_timestamp")]
    return ints + times


def encode(file: IO[bytes], frames: np.ndarray, fps: float, codec: str) -> None:
    """Write uint8 (n, H, W, 3) frames to `file` as an mp4 at `fps`."""
    import av

    spec = check_codec(codec)
    buffer = io.BytesIO()  # the mp4 muxer seeks back to finish; the file is written once
    with av.open(buffer, "w", format="mp4") as container:
        rate = Fraction(fps).limit_denominator(10_000)
        stream = container.add_stream(spec.encoder, rate=rate, options=dict(spec.options))
        assert isinstance(stream, av.VideoStream)
        stream.height = frames.shape[1]
        stream.width = frames.shape[2]
        stream.pix_fmt = spec.pix_fmt
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    file.write(buffer.getvalue())


def decode(path: Path) -> np.ndarray:
    """Every frame of an mp4, uint8 (n, H, W, 3); ValueError if it cannot be read."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            shape = (stream.codec_context.height, stream.codec_context.width, 3)
    except (av.FFmpegError, OSError, IndexError) as e:
        raise ValueError(f"unreadable mp4 ({' '.join(str(e).split())})") from None
    return np.stack(frames) if frames else np.zeros((0, *shape), np.uint8)


def probe(path: Path) -> tuple[int, int, int]:
    """(frames, height, width) from an mp4's header, without decoding; ValueError if unreadable."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return int(stream.frames), stream.codec_context.height, stream.codec_context.width
    except (av.FFmpegError, OSError, IndexError) as e:
        raise ValueError(f"unreadable mp4 ({' '.join(str(e).split())})") from None
