"""Crafted face sets and images fail with one clear error and bounded memory.

Each case runs in a child Python, which reports how much its peak resident memory grew during the
call (``ru_maxrss``): the readers must refuse what the files claim before allocating it.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _media import write_large_jpeg

from pipeline.data.faces.recordio import MAGIC, IRHeader, encode_record, pack_record

LARGE_SIDE = 8000  # 1.6 MB... here a flat grey file of a few hundred KB; 64 MiB grey, 192 MiB RGB decoded


def _in_child(setup: str, call: str) -> tuple[str, float]:
    """Run ``call`` after ``setup`` in a fresh Python; return what it printed (an error's message
    after "ERROR") and the growth of its peak memory over the call, in MiB."""
    script = textwrap.dedent("""
        import resource
        {setup}
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            {call}
        except (ValueError, FileNotFoundError) as exc:
            print("ERROR", exc)
        print("GROWTH", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
    """).format(setup=setup, call=call)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    *printed, growth = done.stdout.strip().splitlines()
    return "\n".join(printed), float(growth.split()[1])


def test_record_0_claiming_200_million_records(tmp_path: Path) -> None:
    """A 44-byte .rec/.idx pair whose record 0 claims the identity range (2e8, 2e8)."""
    (tmp_path / "train.rec").write_bytes(encode_record(pack_record(IRHeader(0, [2e8, 2e8], 0, 0), b"")))
    (tmp_path / "train.idx").write_text("0\t0\n")
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) == 44
    printed, growth = _in_child("from pipeline.data.faces.sets import face_set_info",
                                f"face_set_info({str(tmp_path)!r})")
    assert printed.startswith(f"ERROR {tmp_path / 'train.rec'}: record 0 holds the identity range (2e+08, 2e+08)")
    assert len(printed.splitlines()) == 1 and growth < 64


def test_a_record_of_many_continuation_parts(tmp_path: Path) -> None:
    """Record 0 announced as 4 parts of 8 MiB (a sparse file): refused before any part is read."""
    with (tmp_path / "train.rec").open("wb") as fh:
        for n, flag in enumerate((1, 2, 2, 3)):
            fh.write(struct.pack("<II", MAGIC, (flag << 29) | (8 << 20)))
            fh.seek(8 << 20, 1)
        fh.truncate()
    (tmp_path / "train.idx").write_text("0\t0\n")
    printed, growth = _in_child("from pipeline.data.faces.sets import face_set_info",
                                f"face_set_info({str(tmp_path)!r})")
    assert printed == (f"ERROR {tmp_path / 'train.rec'}: record 0 at offset 0: more than 16777216 bytes in one "
                       "record, far more than a face image; the file is damaged")
    assert growth < 8


@pytest.fixture(scope="module")
def large_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_large_jpeg(tmp_path_factory.mktemp("large") / "00001.jpg", LARGE_SIDE)


# every reader of a crop or face-set image the pipeline did not make, as (setup, call); each call
# prints "ERROR <message>"
READERS = {
    "faces-info on a folder": (
        "from pipeline.data.faces.sets import face_set_info", "face_set_info(folder)"),
    "a face-set image": (
        "from pipeline.data.faces.sets import FolderFaceSet", "FolderFaceSet(folder)[0]"),
    "predict --crops": (
        "from pipeline.predict.video import _crop_from_folder", "_crop_from_folder(crops, 0)"),
    "prepare's crop check": (
        "from pipeline.data.prepare import _jpeg_header_fault", "print('ERROR', _jpeg_header_fault(path, 0))"),
    "pack-frames's crop check": (
        "from pipeline.data.pack_frames import PackConfig, _load_crop",
        "_load_crop(path, 0, 'vidA', PackConfig())"),
    "the frame store's decoder": (
        "from pipeline.storage.frame_store import decode_crop", "decode_crop(path.read_bytes(), str(path))"),
}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_large_jpeg_is_refused_before_it_is_decoded(reader: str, large_jpeg: Path, tmp_path: Path) -> None:
    folder = tmp_path / "faces"
    (folder / "00000").mkdir(parents=True)
    (folder / "00000" / "0000.jpg").write_bytes(large_jpeg.read_bytes())
    setup, call = READERS[reader]
    setup = (f"from pathlib import Path\nfolder = Path({str(folder)!r})\ncrops = Path({str(large_jpeg.parent)!r})\n"
             f"path = Path({str(large_jpeg)!r})\n{setup}")
    printed, growth = _in_child(setup, call)
    assert printed.startswith("ERROR ") and len(printed.splitlines()) == 1, printed
    assert f"{LARGE_SIDE}x{LARGE_SIDE} pixels, larger than the 1024x1024 a face crop may be" in printed
    assert "jpg" in printed  # names the file
    assert growth < 16, f"{reader}: peak memory grew {growth:.0f} MiB"
