"""The audio embedder: shared-span embeddings from tdnn.onnx and model.pt against the window-by-window TDNN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from _embed_inputs import tiny_audio_model_dir
from pipeline.audio.decode import AudioTrack
from pipeline.audio.features import AudioConfig
from pipeline.audio.windows import VideoAudio, track_audio
from pipeline.model_files.onnx_export import make_session
from pipeline.inference.audio import AudioEmbedder
from pipeline.model_files.audio import model_path as audio_model_path
from pipeline.model_files.audio import read_audio_config as load_audio_config
from pipeline.model_files.audio import load_tdnn
from pipeline.model_files.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_audio_model_dir(tmp_path_factory.mktemp("audio-model"))


def _audio(start_s: float = 0.4, seconds: float = 2.0, n_frames: int = 90, fps: float = 30000 / 1001) -> VideoAudio:
    """A noisy tone starting ``start_s`` into the video, so the first frames have no audio."""
    rng = np.random.default_rng(3)
    t = np.arange(int(seconds * 16000)) / 16000
    samples = (0.3 * np.sin(2 * np.pi * 330 * t) + 0.05 * rng.normal(size=t.size)).astype(np.float32)
    return track_audio(AudioTrack(samples, 16000, start_s), n_frames, fps, AudioConfig())


def _window_by_window(model_dir: Path, audio: VideoAudio) -> np.ndarray:
    """What embed-audio computed before spans: ``tdnn.onnx`` on every present frame's cut-out window."""
    session = make_session(model_dir / "tdnn.onnx", "cpu", 1)
    windows = audio.windows()
    out = np.zeros((audio.n_frames, 512), np.float32)
    out[windows.present] = session.run(["embedding"], {"mel": windows.mel[windows.present]})[0]
    return out


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_spans_match_window_by_window_within_float16_storage(model_dir: Path, backend: str) -> None:
    audio = _audio()
    embedder = AudioEmbedder.from_file(audio_model_path(model_dir, backend), "cpu", threads=1)
    assert embedder.audio_config == AudioConfig()
    got = embedder.embed(audio, batch_size=16)
    reference = _window_by_window(model_dir, audio)
    assert got.shape == (90, 512) and got.dtype == np.float32
    assert 5 < (~audio.present).sum() < 90 and not got[~audio.present].any()
    # The store keeps float16: the new values must land within one float16 step of the old ones.
    stored, before = got.astype(np.float16), reference.astype(np.float16)
    step = np.spacing(np.abs(before)).astype(np.float32)
    assert np.all(np.abs(stored.astype(np.float32) - before.astype(np.float32)) <= step)


def test_batch_size_changes_memory_not_results(model_dir: Path) -> None:
    embedder = AudioEmbedder.from_file(model_dir / "tdnn.onnx", "cpu")
    audio = _audio()
    np.testing.assert_allclose(embedder.embed(audio, batch_size=1), embedder.embed(audio, batch_size=64),
                               rtol=1e-5, atol=1e-5)


def test_torch_module_equals_its_checkpoint(model_dir: Path) -> None:
    tdnn = load_tdnn(load_checkpoint(model_dir / "model.pt"))
    audio = _audio(start_s=0.0)
    from_module = AudioEmbedder.from_module(tdnn, AudioConfig()).embed(audio)
    from_file = AudioEmbedder.from_file(model_dir / "model.pt", "cpu").embed(audio)
    np.testing.assert_array_equal(from_module, from_file)
    windows = audio.windows()
    with torch.no_grad():
        expected = tdnn(torch.from_numpy(windows.mel)).numpy() * windows.present[:, None]
    np.testing.assert_allclose(from_module, expected, rtol=1e-4, atol=1e-4)


def test_audio_config_comes_from_either_file(model_dir: Path) -> None:
    assert load_audio_config(model_dir / "tdnn.onnx") == load_audio_config(model_dir / "model.pt") == AudioConfig()


def test_bad_model_files_are_named(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.onnx.*train-audio"):
        AudioEmbedder.from_file(tmp_path / "missing.onnx", "cpu")
    with pytest.raises(ValueError, match="backend must be one of"):
        audio_model_path(model_dir, "tflite")
    from _predict_models import export_sequence

    sequence = export_sequence(tmp_path / "sequence.onnx", "audio")   # an ONNX file without audio config
    with pytest.raises(ValueError, match=r"sequence\.onnx: lacks \['audio_config'\]"):
        AudioEmbedder.from_file(sequence, "cpu")
