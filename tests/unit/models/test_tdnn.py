"""TDNN and fusion head: shapes, finite outputs, every parameter learns, batch consistency, shared-span pooling."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from pipeline.audio.decode import AudioTrack
from pipeline.models.tdnn_spans import embed_frames, encode_spans, span_batch
from pipeline.audio.features import AudioConfig
from pipeline.audio.windows import track_audio
from pipeline.config import to_dict
from pipeline.model_files.audio import load_audio_config, load_fusion_head, load_tdnn
from pipeline.models.fusion import FusionConfig, FusionHead
from pipeline.models.tdnn import TDNN, TDNNConfig

SMALL = TDNNConfig(channels=(16, 16, 32), kernel_sizes=(5, 3, 1), dilations=(1, 2, 1), embedding_dim=512, dropout=0.1)


def _model(cfg: TDNNConfig = SMALL) -> TDNN:
    torch.manual_seed(0)
    return TDNN(cfg)


def test_shapes_and_finite() -> None:
    model = _model().eval()
    out = model(torch.randn(3, 64, 41) * 5 + 5)
    assert out.shape == (3, 512)
    assert torch.isfinite(out).all()


def test_paper_profile_shape() -> None:
    model = TDNN(TDNNConfig()).eval()
    assert model.receptive_field == 15
    assert model(torch.zeros(2, 64, 101)).shape == (2, 512)
    assert model.embedding.in_features == 3000


def test_every_parameter_gets_a_gradient() -> None:
    model = _model().train()
    model(torch.randn(4, 64, 30)).pow(2).mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_batch_consistency_in_eval() -> None:
    model = _model().eval()
    batch = torch.randn(5, 64, 33)
    together = model(batch)
    for i in range(5):
        torch.testing.assert_close(together[i:i + 1], model(batch[i:i + 1]), rtol=1e-5, atol=1e-5)


def test_constant_input_is_finite_in_training() -> None:
    # Zero windows (no audio) give zero variance; the pooling's epsilon keeps the std finite.
    model = _model().train()
    out = model(torch.zeros(4, 64, 20))
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_window_shorter_than_receptive_field_is_refused() -> None:
    with pytest.raises(ValueError, match="receptive field"):
        _model()(torch.zeros(1, 64, SMALL.receptive_field - 1))
    with pytest.raises(ValueError, match=r"\(B, 64, frames\)"):
        _model()(torch.zeros(1, 40, 30))


@pytest.mark.parametrize("bad,match", [
    ({"channels": (8, 8), "kernel_sizes": (3,), "dilations": (1, 1)}, "same non-zero length"),
    ({"channels": (8,), "kernel_sizes": (0,), "dilations": (1,)}, "kernel_sizes"),
    ({"dropout": 1.0}, "dropout"),
])
def test_bad_config(bad: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TDNNConfig(**bad)


def test_shared_span_pooling_equals_window_by_window() -> None:
    model = _model().eval()
    spans = torch.randn(2, 64, 90)
    span_index = torch.tensor([0, 0, 1, 1, 0])
    offsets = torch.tensor([0, 7, 20, 49, 49])
    shared = model.forward_windows(spans, span_index, offsets, 41)
    one_by_one = torch.stack([model(spans[s:s + 1, :, o:o + 41])[0] for s, o in zip(span_index, offsets)])
    torch.testing.assert_close(shared, one_by_one, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="do not fit"):
        model.forward_windows(spans, span_index, offsets + 1, 41)


def _video_audio(start_s: float, seconds: float, n_frames: int, fps: float):
    rng = np.random.default_rng(0)
    track = AudioTrack((rng.normal(size=int(seconds * 16000)) * 0.1).astype(np.float32), 16000, start_s)
    return track_audio(track, n_frames, fps, AudioConfig(context_s=0.2))


def test_embed_frames_equals_windows_and_zeroes_absent_frames() -> None:
    model = _model().eval()
    audio = _video_audio(start_s=0.5, seconds=1.0, n_frames=60, fps=30000 / 1001)   # audio 0.5 s .. 1.5 s
    got = embed_frames(model, audio, chunk_frames=7)
    windows = audio.windows()
    with torch.no_grad():
        expected = model(torch.from_numpy(windows.mel)).numpy() * windows.present[:, None]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert not got[~windows.present].any() and (~windows.present).sum() > 10
    assert not model.training          # the caller's mode is kept
    model.train()
    embed_frames(model, audio)
    assert model.training


def test_span_batch_mixes_videos() -> None:
    model = _model().eval()
    a = _video_audio(0.0, 1.0, 25, 25.0)
    b = _video_audio(-0.2, 2.0, 50, 30.0)
    batch = span_batch([(a, np.arange(3, 10)), (b, np.arange(40, 50))])
    assert batch.spans.shape[0] == 2 and len(batch.offsets) == 17
    with torch.no_grad():
        got = encode_spans(model, batch).numpy()
    expected = np.concatenate([embed_frames(model, a, np.arange(3, 10)), embed_frames(model, b, np.arange(40, 50))])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_fusion_head_shapes_heads_and_gradients() -> None:
    head = FusionHead(FusionConfig(hidden=32, dropout=0.1)).train()
    au, expr, va = head(torch.randn(6, 512), torch.randn(6, 512))
    assert au.shape == (6, 12) and expr.shape == (6, 7) and va.shape == (6, 2) and (va.abs() < 1).all()
    (au.sum() + expr.sum() + va.sum()).backward()
    assert all(p.grad is not None for p in head.parameters())
    assert all(isinstance(h, torch.nn.Linear) for h in (head.au_head, head.expr_head, head.va_head))
    linear = FusionHead(FusionConfig(hidden=0))
    assert linear.au_head.in_features == 1024
    with pytest.raises(ValueError, match="visual"):
        head(torch.randn(2, 100), torch.randn(2, 512))


def test_checkpoint_loaders_round_trip() -> None:
    tdnn, head = _model().eval(), FusionHead(FusionConfig(hidden=16)).eval()
    ckpt = {"tdnn_arch": to_dict(tdnn.cfg), "tdnn": tdnn.state_dict(), "fusion_arch": to_dict(head.cfg),
            "fusion": head.state_dict(), "audio_config": to_dict(AudioConfig(context_s=0.3))}
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    mel, visual, audio = torch.randn(2, 64, 30), torch.randn(2, 512), torch.randn(2, 512)
    torch.testing.assert_close(load_tdnn(loaded)(mel), tdnn(mel))
    torch.testing.assert_close(load_fusion_head(loaded)(visual, audio)[1], head(visual, audio)[1])
    assert load_audio_config(loaded).context_s == 0.3
    with pytest.raises(ValueError, match="fusion_arch"):
        load_fusion_head({k: v for k, v in loaded.items() if k != "fusion_arch"})
