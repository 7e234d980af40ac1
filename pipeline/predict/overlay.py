"""The watchable result of ``predict``: the input video with every followed face's predictions drawn on it.

On each frame, each face followed there gets its box (one colour per face id), a label with its id and
most probable expression with that probability, 12 small bars, one per AU probability, each with a
tick at that AU's decision threshold (the one the CSV's ``<AU>_active`` uses), beside the box (right
of it, or left when the frame ends), and under the bars (above them when the frame ends first) a
valence-arousal disc: valence across, arousal up, a dot at the face's (valence, arousal) and the two
values beside it. A face whose place
is unknown (read from a crops folder) gets the label, bars and disc in the frame's top-left corner.
Frames without a face are re-encoded unchanged.

The video is decoded a second time, after the whole video's predictions exist, and streamed frame by
frame (memory does not grow with the video's length). The picture is written as a viewer sees the
input: a clip stored sideways with a display matrix (a phone's portrait video) is turned upright, as
``predict`` turned it to find the faces, and written without a display matrix. It is re-encoded as
H.264 at the input's frame rate, frame count and timestamps (an odd width or height loses its last
pixel column or row: H.264's 4:2:0 needs even sides); the audio stream is copied as it is when MP4 can hold its codec and
re-encoded as AAC otherwise. The file appears under its name only once complete.

Example:
    >>> import numpy as np
    >>> mark = FaceMark(0, (20.0, 20.0, 60.0, 60.0), np.full(12, 0.5), np.eye(7)[4], np.array([0.3, -0.6]))
    >>> drawn = draw_marks(np.zeros((240, 200, 3), np.uint8), [mark])
    >>> drawn.shape, bool(drawn[20:80, 20:80].any())
    ((240, 200, 3), True)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.data.media_open import MediaLimits, check_frame_size, open_media
from pipeline.data.video import display_image, first_frame_rotation
from pipeline.error_words import error_words
from pipeline.fsio import atomic_path
from pipeline.au_thresholds import AuThresholds
from pipeline.labels import AU_NAMES, EXPR_NAMES, NUM_AUS, NUM_EXPRS, NUM_VA
from pipeline.predict.pass_progress import ProgressCallback, expected_frames, progress_reporter

log = logging.getLogger(__name__)

# Distinct colours for face ids (cycled), readable on dark and light backgrounds.
FACE_COLOURS: tuple[tuple[int, int, int], ...] = (
    (46, 204, 113), (52, 152, 219), (241, 196, 15), (231, 76, 60), (155, 89, 182), (26, 188, 156),
)
# Audio codecs an MP4 file holds as they are; any other is re-encoded as AAC.
MP4_AUDIO_CODECS = frozenset({"aac", "mp3", "alac", "opus", "flac", "ac3", "eac3"})
# Our choice: visually lossless re-encoding at a speed two cores keep up with.
X264_OPTIONS = {"crf": "18", "preset": "veryfast"}


@dataclass(frozen=True)
class FaceMark:
    """What is drawn for one face on one frame: its id, box ``(x, y, w, h)`` (None: unknown), probabilities
    and valence-arousal (None: no disc)."""

    face_id: int
    box: tuple[float, float, float, float] | None
    au_prob: np.ndarray     # (12,)
    expr_prob: np.ndarray   # (7,)
    va: np.ndarray | None = None   # (2,) valence, arousal in [-1, 1]


def marks_by_frame(predictions: Iterable[object]) -> dict[int, list[FaceMark]]:
    """``{frame: its faces' marks}`` from the :class:`~pipeline.predict.video.FacePrediction` of every face id.

    The rows of frames without any face (``face_id`` None) draw nothing and are left out.
    """
    marks: dict[int, list[FaceMark]] = {}
    for pred in predictions:
        if pred.face_id is None:
            continue
        for k, frame in enumerate(pred.frames):
            box = None if pred.boxes is None else tuple(float(v) for v in pred.boxes[k])
            va = None if getattr(pred, "va", None) is None else pred.va[k]
            marks.setdefault(int(frame), []).append(
                FaceMark(pred.face_id, box, pred.au_prob[k], pred.expr_prob[k], va))
    return marks


def draw_marks(image: np.ndarray, marks: Sequence[FaceMark], au_thresholds: AuThresholds | None = None) -> np.ndarray:
    """A copy of ``image`` ((H, W, 3) uint8 RGB) with each face's box, label, AU bars and valence-arousal
    disc drawn on it; each bar's tick sits at its AU's threshold in ``au_thresholds`` (0.5 when not given)."""
    ticks = np.full(NUM_AUS, 0.5) if au_thresholds is None else np.asarray(au_thresholds.values, np.float64)
    canvas = Image.fromarray(np.asarray(image, np.uint8))
    draw = ImageDraw.Draw(canvas, "RGBA")    # RGBA fills blend onto the RGB frame
    height = canvas.height
    font = ImageFont.load_default(size=max(10, round(height / 45)))
    for mark in marks:
        _draw_mark(draw, font, mark, (canvas.width, canvas.height), ticks)
    return np.asarray(canvas)


def _draw_mark(draw: ImageDraw.ImageDraw, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, mark: FaceMark,
               frame_size: tuple[int, int], ticks: np.ndarray) -> None:
    if np.shape(mark.au_prob) != (NUM_AUS,) or np.shape(mark.expr_prob) != (NUM_EXPRS,):
        raise ValueError(f"face {mark.face_id}: expected {NUM_AUS} AU and {NUM_EXPRS} expression probabilities, "
                         f"got {np.shape(mark.au_prob)} and {np.shape(mark.expr_prob)}")
    if mark.va is not None and np.shape(mark.va) != (NUM_VA,):
        raise ValueError(f"face {mark.face_id}: expected {NUM_VA} valence-arousal values, got {np.shape(mark.va)}")
    colour = FACE_COLOURS[mark.face_id % len(FACE_COLOURS)]
    size = int(getattr(font, "size", 10))
    best = int(np.argmax(mark.expr_prob))
    label = f"face {mark.face_id}: {EXPR_NAMES[best]} {float(mark.expr_prob[best]):.2f}"
    left, top, right, _ = draw.textbbox((0, 0), label, font=font)
    label_w, label_h = right - left + 6, size + 6
    if mark.box is None:
        x, y, w, h = 4.0, 4.0 + label_h, 0.0, 0.0
    else:
        x, y, w, h = mark.box
        draw.rectangle((x, y, x + w, y + h), outline=colour, width=max(2, size // 6))
    label_y = y - label_h if y - label_h >= 0 else y
    draw.rectangle((x, label_y, x + label_w, label_y + label_h), fill=(*colour, 220))
    draw.text((x + 3, label_y + 3 - top), label, font=font, fill=(0, 0, 0))
    panel = _draw_au_bars(draw, font, mark, colour, (x, y, w, h), label_h if mark.box is None else 0,
                          frame_size[0], ticks)
    if mark.va is not None:
        _draw_va_disc(draw, font, mark.va, colour, panel, frame_size[1])


def _draw_au_bars(draw: ImageDraw.ImageDraw, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, mark: FaceMark,
                  colour: tuple[int, int, int], box: tuple[float, float, float, float], below: int,
                  frame_width: int, ticks: np.ndarray) -> tuple[float, float, float, float]:
    """12 rows ``AUk [bar]`` beside the box, the bar's filled share the AU's probability, over a scale row
    (0, 0.5, 1) that says how to read them; each bar has a tick at its AU's decision threshold (``ticks``,
    (12,)), so a bar past its tick is an active AU. Returns the panel's ``(left, top, right, bottom)``."""
    x, y, w, _ = box
    size = int(getattr(font, "size", 10))
    row = size + 2
    name_w = max(draw.textbbox((0, 0), name, font=font)[2] for name in AU_NAMES) + 4
    bar_w = 4 * size
    panel_w, panel_h = name_w + bar_w + 6, row * (NUM_AUS + 1) + 4
    gap = max(3, size // 3)
    if below:                                 # no box: under the label, in the corner
        px, py = x, y + 2
    elif x + w + gap + panel_w <= frame_width or x - gap - panel_w < 0:
        px, py = x + w + gap, y
    else:
        px, py = x - gap - panel_w, y
    draw.rectangle((px, py, px + panel_w, py + panel_h), fill=(0, 0, 0, 150))
    for k, (name, prob) in enumerate(zip(AU_NAMES, mark.au_prob)):
        top = py + 2 + k * row
        draw.text((px + 3, top), name, font=font, fill=(255, 255, 255))
        bar_x = px + 3 + name_w
        draw.rectangle((bar_x, top + 2, bar_x + bar_w, top + row - 2), outline=(200, 200, 200, 200))
        filled = float(np.clip(prob, 0.0, 1.0)) * bar_w
        if filled >= 1.0:
            draw.rectangle((bar_x, top + 2, bar_x + filled, top + row - 2), fill=(*colour, 255))
        tick_x = bar_x + float(np.clip(ticks[k], 0.0, 1.0)) * bar_w
        draw.line((tick_x, top + 1, tick_x, top + row - 1), fill=(255, 255, 255, 160))
    _draw_scale(draw, font, px + 3 + name_w, py + 2 + NUM_AUS * row, bar_w)
    return px, py, px + panel_w, py + panel_h


def _draw_va_disc(draw: ImageDraw.ImageDraw, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, va: np.ndarray,
                  colour: tuple[int, int, int], panel: tuple[float, float, float, float],
                  frame_height: int) -> None:
    """A valence-arousal disc under the AU panel (above it when the frame ends first, at the frame's
    bottom when neither fits): valence across (-1 left, 1 right), arousal up, the face's point as a dot
    (clipped to the disc's square), and ``V +0.12`` / ``A -0.40`` beside it."""
    left, panel_top, right, bottom = panel
    size = int(getattr(font, "size", 10))
    radius = 2 * size
    gap, height = max(3, size // 3), 2 * radius + 4
    top = bottom + gap
    if top + height > frame_height:
        top = panel_top - gap - height if panel_top - gap - height >= 0 else max(0, frame_height - height)
    cx, cy = left + radius + 2, top + radius + 2
    text_w = max(draw.textbbox((0, 0), text, font=font)[2] for text in ("V +0.00", "A +0.00"))
    draw.rectangle((left, top, max(right, left + 2 * radius + 10 + text_w), top + 2 * radius + 4),
                   fill=(0, 0, 0, 150))
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), outline=(200, 200, 200, 220))
    draw.line((cx - radius, cy, cx + radius, cy), fill=(255, 255, 255, 110))
    draw.line((cx, cy - radius, cx, cy + radius), fill=(255, 255, 255, 110))
    valence, arousal = (float(np.clip(v, -1.0, 1.0)) for v in va)
    dot_x, dot_y, dot_r = cx + valence * radius, cy - arousal * radius, max(2, size // 4)
    draw.ellipse((dot_x - dot_r, dot_y - dot_r, dot_x + dot_r, dot_y + dot_r), fill=(*colour, 255),
                 outline=(255, 255, 255))
    for k, (name, value) in enumerate((("V", float(va[0])), ("A", float(va[1])))):
        draw.text((cx + radius + 6, cy - size - 1 + k * (size + 2)), f"{name} {value:+.2f}", font=font,
                  fill=(255, 255, 255))


def _draw_scale(draw: ImageDraw.ImageDraw, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, bar_x: float,
                top: float, bar_w: int) -> None:
    """The bars' scale under them: ``0`` at the bar's start, ``.5`` at its middle, ``1`` at its end."""
    for value, text in ((0.0, "0"), (0.5, ".5"), (1.0, "1")):
        text_w = draw.textbbox((0, 0), text, font=font)[2]
        tick_x = bar_x + value * bar_w
        draw.line((tick_x, top, tick_x, top + 2), fill=(255, 255, 255))
        draw.text((min(max(tick_x - text_w / 2, bar_x - 2), bar_x + bar_w - text_w + 2), top + 1), text,
                  font=font, fill=(255, 255, 255))


def write_overlay(video_path: str | Path, out_path: str | Path, predictions: Iterable[object],
                  progress: ProgressCallback | None = None, limits: MediaLimits = MediaLimits(),
                  au_thresholds: AuThresholds | None = None) -> Path:
    """Write ``out_path`` (MP4): ``video_path`` re-encoded with ``predictions`` drawn, its audio kept.

    ``predictions`` are the video's :class:`~pipeline.predict.video.FacePrediction` (frame indices in
    decoding order, as ``predict`` counts them; boxes in display orientation); the AU bars' ticks sit
    at ``au_thresholds`` (the model's, which decided the CSV's ``<AU>_active``; 0.5 when not given).
    Written to a temporary and renamed, so a failed or killed run leaves no ``out_path``.
    """
    video_path, out_path = Path(video_path), Path(out_path)
    if out_path.resolve() == video_path.resolve():
        raise ValueError(f"{video_path}: the overlay would overwrite its own video; choose another path")
    marks = marks_by_frame(predictions)
    frame_done = progress_reporter(progress, video_path, "overlay", expected_frames(video_path))
    rotation = first_frame_rotation(video_path, limits)
    with open_media(video_path, limits) as source, atomic_path(out_path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as target:
            _transcode(video_path, source, target, marks, frame_done, rotation, limits,
                       partial(draw_marks, au_thresholds=au_thresholds))
    log.info("%s: overlay -> %s", video_path, out_path)
    return out_path


def _transcode(video_path: Path, source: av.container.InputContainer, target: av.container.OutputContainer,
               marks: dict[int, list[FaceMark]], frame_done: Callable[[], None], rotation: int,
               limits: MediaLimits, draw: Callable[[np.ndarray, list[FaceMark]], np.ndarray]) -> None:
    """Decode ``source``'s first video stream, turn it upright (``rotation``: its first frame's display turn),
    draw (``draw(image, marks)``), encode; pass its first audio stream through."""
    if not source.streams.video:
        raise ValueError(f"{video_path}: no video stream")
    video_in = source.streams.video[0]
    rate = video_in.average_rate or video_in.guessed_rate or Fraction(25)
    width, height = video_in.codec_context.width, video_in.codec_context.height
    if rotation in (90, 270):
        width, height = height, width
    width, height = width // 2 * 2, height // 2 * 2
    video_out = target.add_stream("libx264", rate=rate, options=X264_OPTIONS)
    video_out.width, video_out.height, video_out.pix_fmt = width, height, "yuv420p"
    video_out.codec_context.time_base = 1 / Fraction(rate)
    audio_in = source.streams.audio[0] if source.streams.audio else None
    audio_out, copy_audio = None, False
    if audio_in is not None:
        copy_audio = audio_in.codec_context.name in MP4_AUDIO_CODECS
        if copy_audio:
            audio_out = target.add_stream_from_template(audio_in)
        else:
            audio_out = target.add_stream("aac", rate=audio_in.codec_context.sample_rate or 48000)
    streams = [s for s in (video_in, audio_in) if s is not None]
    # frame i is shown at i / rate from 0; the audio keeps its place against the video's first frame
    start_s = float(video_in.start_time * video_in.time_base) if video_in.start_time is not None else 0.0
    index = 0
    for packet in source.demux(*streams):
        if packet.stream is video_in:
            for frame in _decode(video_path, packet):
                check_frame_size(video_path, frame.width, frame.height, limits, f"frame {index}")
                _encode_frame(target, video_out, frame, index, marks.get(index), (width, height), draw)
                index += 1
                frame_done()
        elif audio_out is not None:
            _pass_audio(target, audio_out, packet, copy_audio, start_s)
    if index == 0:
        raise ValueError(f"{video_path}: the video stream holds no frames")
    target.mux(video_out.encode())
    if audio_out is not None and not copy_audio:
        target.mux(audio_out.encode())


def _decode(video_path: Path, packet: av.Packet) -> Iterator[av.VideoFrame]:
    try:
        yield from packet.decode()
    except av.FFmpegError as exc:
        raise ValueError(f"{video_path}: cannot decode a video packet at pts {packet.pts} "
                         f"({error_words(exc, video_path)})") from exc


def _encode_frame(target: av.container.OutputContainer, stream: av.VideoStream, frame: av.VideoFrame, index: int,
                  marks: list[FaceMark] | None, size: tuple[int, int],
                  draw: Callable[[np.ndarray, list[FaceMark]], np.ndarray]) -> None:
    """Encode decoded frame ``index`` upright at ``index / rate``, with its faces drawn when it has any."""
    width, height = size
    if marks:
        image = draw(display_image(frame)[:height, :width], marks)
        out = av.VideoFrame.from_ndarray(image, format="rgb24")
    elif (frame.width, frame.height) != size or frame.rotation:
        out = av.VideoFrame.from_ndarray(display_image(frame)[:height, :width], format="rgb24")
    else:
        out = frame   # unchanged upright picture: the encoder converts it to yuv420p itself
    # the encoder's clock is 1/rate: the frame count and rate are the input's, each frame kept once
    out.pts = index
    out.time_base = stream.codec_context.time_base
    target.mux(stream.encode(out))


def _pass_audio(target: av.container.OutputContainer, stream: av.AudioStream, packet: av.Packet, copy: bool,
                start_s: float) -> None:
    """Copy an audio packet into ``target`` (moved by the video's start ``start_s``), or decode it and encode
    it as AAC."""
    if packet.dts is None:      # the demuxer's end-of-stream flush packet
        return
    if copy:
        shift = int(round(start_s / packet.time_base)) if start_s else 0
        packet.pts = None if packet.pts is None else packet.pts - shift
        packet.dts -= shift
        packet.stream = stream
        target.mux(packet)
        return
    for frame in packet.decode():
        frame.pts = None        # the encoder re-times its own 1024-sample frames
        target.mux(stream.encode(frame))
