"""Face-set readers: the packed .rec/.idx format (hand-built edge cases included) and identity folders."""

from __future__ import annotations

import io
import pickle
import shutil
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.data.faces.recordio import (
    MAGIC, IRHeader, RecordIOError, RecordReader, RecordWriter, encode_record, pack_record, unpack_record,
)
from pipeline.data.faces.sets import (
    FaceSetFormatError, FolderFaceSet, PackedFaceSet, check_same_faces, face_set_info, open_face_set,
)
from pipeline.data.faces.writers import FolderFaceSetWriter, PackedFaceSetWriter
from pipeline.data.synth.identities import FaceIdentityConfig, generate_face_identities

MAGIC_BYTES = struct.pack("<I", MAGIC)


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faces") / "set"
    generate_face_identities(root, FaceIdentityConfig(identities=4, images_per_identity=3, seed=1))
    return root


def _write_raw(root: Path, records: list[bytes], offsets: list[int] | None = None) -> tuple[Path, Path]:
    """A .rec of the given raw bytes (already framed) and an .idx of their offsets."""
    rec, idx = root / "train.rec", root / "train.idx"
    rec.write_bytes(b"".join(records))
    if offsets is None:
        offsets = list(np.cumsum([0] + [len(r) for r in records[:-1]]))
    idx.write_text("".join(f"{k}\t{o}\n" for k, o in enumerate(offsets)))
    return rec, idx


def test_both_layouts_hold_the_same_images_and_labels(faces: Path) -> None:
    packed, folder = open_face_set(faces / "rec"), open_face_set(faces / "folder")
    assert isinstance(packed, PackedFaceSet) and isinstance(folder, FolderFaceSet)
    assert len(packed) == len(folder) == 12
    assert packed.labels.tolist() == folder.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    for i in (0, 5, 11):
        assert packed.jpeg(i) == folder.jpeg(i)
        image, label = packed[i]
        assert image.shape == (112, 112, 3) and image.dtype == np.uint8 and label == i // 3


def test_check_same_faces_reads_both_layouts_and_names_the_first_difference(faces: Path, tmp_path: Path) -> None:
    assert check_same_faces(faces / "rec", faces / "folder") == 12
    copy = tmp_path / "folder"
    writer = FolderFaceSetWriter(copy, 4)
    source = open_face_set(faces / "folder")
    for i in range(len(source)):
        data, label = source.jpeg(i)
        writer.add(label, data)
    assert check_same_faces(faces / "rec", copy) == 12
    changed = sorted((copy / sorted(p.name for p in copy.iterdir())[1]).iterdir())[2]  # image 5
    changed.write_bytes(changed.read_bytes() + b"\0")
    with pytest.raises(ValueError, match=r"image 5 differs"):
        check_same_faces(faces / "rec", copy)
    changed.unlink()
    with pytest.raises(ValueError, match="12 images of 4 identities"):
        check_same_faces(faces / "rec", copy)


def test_info_of_each_format_and_of_the_rec_file_itself(faces: Path) -> None:
    expected = {"identities": 4, "images": 12}
    assert face_set_info(faces / "rec") == {"format": "rec", **expected}
    assert face_set_info(faces / "rec" / "train.rec") == {"format": "rec", **expected}
    assert face_set_info(faces / "folder") == {"format": "folder", **expected}


def test_record_0_and_identity_records_follow_insightface(faces: Path) -> None:
    reader = RecordReader(faces / "rec" / "train.rec", faces / "rec" / "train.idx")
    header0, _ = unpack_record(reader.read(0))
    assert header0.flag == 2 and header0.label.tolist() == [13.0, 17.0]   # images 1..12, identities 13..16
    ident, _ = unpack_record(reader.read(14))
    assert ident.label.tolist() == [4.0, 7.0]
    image, data = unpack_record(reader.read(5))
    assert image.flag == 0 and image.label == 1.0 and image.id == 5 and data[:3] == b"\xff\xd8\xff"
    assert (faces / "rec" / "property").read_text() == "4,112,112\n"


def test_record_layout_matches_mxnet(tmp_path: Path) -> None:
    # MXNet's MXIndexedRecordIO documents tell() after writing 'record_0'..'record_4': 16, 32, ... 80
    with RecordWriter(tmp_path / "x.rec", tmp_path / "x.idx") as writer:
        for i in range(5):
            writer.write(i, f"record_{i}".encode())
    assert (tmp_path / "x.idx").read_text() == "".join(f"{i}\t{16 * i}\n" for i in range(5))
    data = (tmp_path / "x.rec").read_bytes()
    assert data[:16] == bytes.fromhex("0a23d7ce") + struct.pack("<I", 8) + b"record_0"
    assert encode_record(b"abcde") == bytes.fromhex("0a23d7ce") + struct.pack("<I", 5) + b"abcde\0\0\0"


def test_payload_holding_the_magic_is_split_and_rejoined(tmp_path: Path) -> None:
    payload = b"abcd" + MAGIC_BYTES + b"efgh" + MAGIC_BYTES + b"xy" + b"z" + MAGIC_BYTES  # last one unaligned
    encoded = encode_record(payload)
    assert encoded.count(MAGIC_BYTES) == 3 + 1       # three frames, plus the unaligned one kept as data
    assert struct.unpack_from("<I", encoded, 4)[0] >> 29 == 1   # first part
    with RecordWriter(tmp_path / "x.rec", tmp_path / "x.idx") as writer:
        writer.write(0, b"first")
        writer.write(1, payload)
        writer.write(2, b"last!")
    reader = RecordReader(tmp_path / "x.rec", tmp_path / "x.idx")
    assert [reader.read(k) for k in (2, 1, 0)] == [b"last!", payload, b"first"]
    assert (tmp_path / "x.rec").stat().st_size % 4 == 0


def test_label_arrays_round_trip() -> None:
    header, data = unpack_record(pack_record(IRHeader(0, np.array([3.0, 9.0]), 5, 0), b"img"))
    assert header.flag == 2 and header.label.tolist() == [3.0, 9.0] and header.id == 5 and data == b"img"


def test_empty_record_is_an_error_naming_file_and_record(tmp_path: Path) -> None:
    good = encode_record(pack_record(IRHeader(0, 0.0, 0, 0), b"x"))
    empty = struct.pack("<II", MAGIC, 0)
    rec, idx = _write_raw(tmp_path, [good, empty])
    with pytest.raises(RecordIOError, match=rf"{rec}: record 1 at offset {len(good)}: empty record"):
        RecordReader(rec, idx).read(1)


def test_wrong_magic_is_an_error_naming_offset(tmp_path: Path) -> None:
    good = encode_record(b"abcd")
    bad = struct.pack("<II", 0xDEADBEEF, 4) + b"abcd"
    rec, idx = _write_raw(tmp_path, [good, bad])
    with pytest.raises(RecordIOError, match=rf"record 1 at offset {len(good)}: wrong magic 0xdeadbeef"):
        RecordReader(rec, idx).read(1)


def test_index_pointing_past_the_end_is_an_error(tmp_path: Path) -> None:
    good = encode_record(b"abcd")
    rec, idx = _write_raw(tmp_path, [good, good], offsets=[0, 4096])
    with pytest.raises(RecordIOError, match=r"record 1 at offset 4096: outside the file \(24 bytes\)"):
        RecordReader(rec, idx).read(1)
    truncated = struct.pack("<II", MAGIC, 100) + b"abcd"
    rec, idx = _write_raw(tmp_path, [good, truncated])
    with pytest.raises(RecordIOError, match="100 bytes announced, file ends first"):
        RecordReader(rec, idx).read(1)


def test_malformed_index_line_names_file_and_line(tmp_path: Path) -> None:
    rec, idx = _write_raw(tmp_path, [encode_record(b"abcd")])
    idx.write_text("0\t0\n1 8\n")
    with pytest.raises(RecordIOError, match=r"train\.idx:2: expected 'key<TAB>offset', got '1 8'"):
        RecordReader(rec, idx)


def test_missing_idx_names_the_index(tmp_path: Path) -> None:
    (tmp_path / "train.rec").write_bytes(encode_record(b"abcd"))
    with pytest.raises(FileNotFoundError, match=r"train\.idx: index file not found"):
        open_face_set(tmp_path)


def test_not_a_jpeg_names_the_record(tmp_path: Path) -> None:
    with PackedFaceSetWriter(tmp_path, [1, 1]) as writer:
        writer.add(0, b"\xff\xd8\xff" + bytes(10))
        writer.add(1, b"\x89PNG....")
    faces = PackedFaceSet(tmp_path / "train.rec")
    with pytest.raises(RecordIOError, match=r"train\.rec: record 2: not a JPEG \(starts with 89504e47\)"):
        faces[1]
    with pytest.raises(RecordIOError, match=r"record 1: broken JPEG"):
        faces[0]


def test_folder_image_that_is_not_a_jpeg_names_the_file(tmp_path: Path) -> None:
    writer = FolderFaceSetWriter(tmp_path, 2)
    writer.add(0, b"GIF89a")
    writer.add(1, b"GIF89a")
    with pytest.raises(RecordIOError, match=r"00000/0000\.jpg: not a JPEG"):
        FolderFaceSet(tmp_path)[0]


def test_packed_writer_checks_order_and_counts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="identity order"):
        with PackedFaceSetWriter(tmp_path, [2, 1]) as writer:
            writer.add(1, b"x")
    with pytest.raises(ValueError, match="2 images added, 3 announced"):
        with PackedFaceSetWriter(tmp_path, [2, 1]) as writer:
            writer.add(0, b"x")
            writer.add(0, b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == []   # nothing half-written published


@pytest.mark.parametrize("span,message", [
    ((1, 9), r"identity record 3: image range \(1, 9\) outside 1\.\.2"),
    ((1, 2), r"image record 2 belongs to no identity record"),
])
def test_identity_records_must_cover_the_images(tmp_path: Path, span: tuple[int, int], message: str) -> None:
    with RecordWriter(tmp_path / "train.rec", tmp_path / "train.idx") as writer:
        writer.write(0, pack_record(IRHeader(0, np.array([3.0, 4.0]), 0, 0), b""))
        for key in (1, 2):
            writer.write(key, pack_record(IRHeader(0, 0.0, key, 0), b"\xff\xd8\xff"))
        writer.write(3, pack_record(IRHeader(0, np.array(span, dtype=float), 3, 0), b""))
    faces = PackedFaceSet(tmp_path / "train.rec")
    assert len(faces) == 2 and faces.identities == 1
    with pytest.raises(RecordIOError, match=message):
        faces.labels


def test_a_set_without_header_reads_every_key_as_an_image(tmp_path: Path) -> None:
    """insightface's MXFaceDataset: when record 0's flag is 0, every index key is an image, 0 included."""
    with RecordWriter(tmp_path / "train.rec", tmp_path / "train.idx") as writer:
        for key, label in ((0, 7.0), (1, 4.0), (2, 4.0), (3, 9.0)):
            writer.write(key, pack_record(IRHeader(0, label, key, 0), b"\xff\xd8\xff"))
    faces = PackedFaceSet(tmp_path / "train.rec")
    assert len(faces) == 4 and faces.identities == 3 and faces.labels.tolist() == [7, 4, 4, 9]
    assert face_set_info(tmp_path) == {"format": "rec", "identities": 3, "images": 4}


def test_an_index_with_keys_out_of_order_finds_each_record(tmp_path: Path) -> None:
    records = [encode_record(payload) for payload in (b"zero", b"nine", b"two!")]
    rec, idx = _write_raw(tmp_path, records)
    idx.write_text(f"5\t0\n9\t{len(records[0])}\n2\t{len(records[0]) + len(records[1])}\n")
    reader = RecordReader(rec, idx)
    assert [reader.read(k) for k in (2, 5, 9)] == [b"two!", b"zero", b"nine"]
    assert reader.keys().tolist() == [5, 9, 2] and 3 not in reader.index
    with pytest.raises(KeyError, match="no record 3 in the index"):
        reader.read(3)


def test_paths_that_are_no_face_set_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(FaceSetFormatError, match="neither an insightface"):
        open_face_set(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FaceSetFormatError, match=r"empty: no <identity>/<image>\.jpg files"):
        open_face_set(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such file"):
        open_face_set(tmp_path / "absent")


def test_reader_is_safe_in_dataloader_workers(faces: Path) -> None:
    packed = open_face_set(faces / "rec")
    packed[0]   # the parent opens its file before the workers fork
    loader = torch.utils.data.DataLoader(packed, batch_size=4, num_workers=2, shuffle=False)
    images, labels = zip(*loader)
    assert torch.cat(labels).tolist() == packed.labels.tolist()
    assert torch.equal(torch.cat(images)[7], torch.from_numpy(packed[7][0]))
    assert packed[3][1] == 1   # the parent's handle still reads correctly after the workers


def test_threads_sharing_one_reader_get_their_own_records(faces: Path) -> None:
    packed = open_face_set(faces / "rec")
    expected = [packed.jpeg(i) for i in range(len(packed))]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(packed.jpeg, [i for _ in range(20) for i in range(len(packed))]))
    assert got == expected * 20


def test_a_pickled_reader_opens_its_own_file(faces: Path) -> None:
    packed = open_face_set(faces / "rec")
    packed[0]
    copy = pickle.loads(pickle.dumps(packed))
    assert copy.reader._handle is None and copy.jpeg(5) == packed.jpeg(5)


def test_an_index_with_a_non_numeric_line_names_file_and_line(tmp_path: Path) -> None:
    rec, idx = _write_raw(tmp_path, [encode_record(b"abcd"), encode_record(b"efgh")])
    idx.write_text("0\t0\n1\tabc\n")
    with pytest.raises(RecordIOError, match=r"train\.idx:2: expected 'key<TAB>offset', got '1\\tabc'"):
        RecordReader(rec, idx)


def _garble(path: Path, offset: int, length: int = 16) -> None:
    with path.open("r+b") as fh:
        fh.seek(offset)
        fh.write(b"\x5a" * length)


def test_check_finds_garbage_mid_file_naming_the_record(faces: Path, tmp_path: Path) -> None:
    """faces-info checks every record's framing, IRHeader and JPEG start, not only record 0's."""
    root = Path(shutil.copytree(faces / "rec", tmp_path / "rec"))
    reader = RecordReader(root / "train.rec", root / "train.idx")
    _garble(root / "train.rec", reader.index.offset(7))
    with pytest.raises(RecordIOError, match=r"train\.rec: record 7 at offset \d+: wrong magic 0x5a5a5a5a"):
        face_set_info(root)
    root = Path(shutil.copytree(faces / "rec", tmp_path / "image"))
    _garble(root / "train.rec", reader.index.offset(9) + 8 + 24, 4)  # the JPEG's first bytes
    with pytest.raises(RecordIOError, match=r"train\.rec: record 9: not a JPEG \(starts with 5a5a5a5a\)"):
        face_set_info(root)


def test_check_finds_a_label_that_is_no_class_number(tmp_path: Path) -> None:
    with RecordWriter(tmp_path / "train.rec", tmp_path / "train.idx") as writer:
        writer.write(0, pack_record(IRHeader(0, 1.0, 0, 0), b"\xff\xd8\xff"))
        writer.write(1, pack_record(IRHeader(0, float("nan"), 1, 0), b"\xff\xd8\xff"))
    with pytest.raises(RecordIOError, match=r"train\.rec: record 1: label nan is not a class number"):
        face_set_info(tmp_path)


def test_check_finds_a_folder_image_that_is_not_a_jpeg(faces: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(faces / "folder", tmp_path / "folder"))
    image = sorted(root.rglob("*.jpg"))[5]
    buffer = io.BytesIO()
    Image.new("RGB", (112, 112)).save(buffer, "PNG")
    image.write_bytes(buffer.getvalue())
    with pytest.raises(RecordIOError, match=rf"{image}: not a JPEG \(starts with 89504e47\)"):
        face_set_info(root)


def test_record_0_claiming_more_records_than_the_index_lists_is_refused(tmp_path: Path) -> None:
    with RecordWriter(tmp_path / "train.rec", tmp_path / "train.idx") as writer:
        writer.write(0, pack_record(IRHeader(0, np.array([2e8, 2e8]), 0, 0), b""))
    with pytest.raises(RecordIOError, match=r"identity range \(2e\+08, 2e\+08\), expected 1 <= start <= stop "
                                            r"<= 1, the records .*train\.idx lists"):
        PackedFaceSet(tmp_path / "train.rec")


def test_a_record_longer_than_the_cap_is_refused_before_it_is_read(tmp_path: Path) -> None:
    rec, idx = _write_big_record(tmp_path, parts=3, part_bytes=8 << 20)
    with pytest.raises(RecordIOError, match=r"record 0 at offset 0: more than 16777216 bytes in one record"):
        RecordReader(rec, idx).read(0)


def _write_big_record(root: Path, parts: int, part_bytes: int) -> tuple[Path, Path]:
    """Record 0 as ``parts`` continuation parts of ``part_bytes`` zeros each (a sparse file)."""
    rec, idx = root / "train.rec", root / "train.idx"
    with rec.open("wb") as fh:
        for n in range(parts):
            flag = 1 if n == 0 else 3 if n == parts - 1 else 2
            fh.write(struct.pack("<II", MAGIC, (flag << 29) | part_bytes))
            fh.seek(part_bytes, 1)
        fh.truncate()
    idx.write_text("0\t0\n")
    return rec, idx


def test_heads_read_single_and_multi_part_records_alike(tmp_path: Path) -> None:
    payloads = [b"first", b"abcd" + MAGIC_BYTES + b"efgh" + MAGIC_BYTES + b"xy", b"last!"]
    with RecordWriter(tmp_path / "x.rec", tmp_path / "x.idx") as writer:
        for key, payload in enumerate(payloads):
            writer.write(key, payload)
    reader = RecordReader(tmp_path / "x.rec", tmp_path / "x.idx")
    for size in (3, 10, 100):
        assert list(reader.heads(np.array([2, 1, 0]), size)) == [(k, payloads[k][:size]) for k in (2, 1, 0)]
        assert [reader.read_head(k, size) for k in range(3)] == [p[:size] for p in payloads]


def test_record_writer_never_writes_through_a_planted_link(tmp_path: Path) -> None:
    import os

    from pipeline.data.faces.recordio import RecordReader, RecordWriter

    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    for name in ("train.rec", "train.idx"):  # the names the writer used to pick
        (tmp_path / f".{name}.tmp-{os.getpid()}").symlink_to(victim)
    with RecordWriter(tmp_path / "train.rec", tmp_path / "train.idx") as writer:
        writer.write(0, b"payload")
    assert victim.read_text() == "keep"
    assert RecordReader(tmp_path / "train.rec", tmp_path / "train.idx").read(0) == b"payload"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.is_symlink()) == ["train.idx", "train.rec", "victim.txt"]
