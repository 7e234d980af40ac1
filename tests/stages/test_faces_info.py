"""`mmaffect faces-info`: one JSON object for either format, exit 1 with one line otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.data.synth.identities import FaceIdentityConfig, generate_face_identities
from stages.cli import main


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faces") / "set"
    generate_face_identities(root, FaceIdentityConfig(identities=3, images_per_identity=2))
    return root


@pytest.mark.parametrize("sub,fmt", [("rec", "rec"), ("rec/train.rec", "rec"), ("folder", "folder")])
def test_prints_one_json_object(faces: Path, sub: str, fmt: str) -> None:
    result = CliRunner().invoke(main, ["faces-info", str(faces / sub)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"format": fmt, "identities": 3, "images": 6}


def test_a_path_in_neither_format_exits_1_with_one_line(faces: Path, tmp_path: Path) -> None:
    (tmp_path / "video.mp4").write_bytes(b"\0" * 16)
    result = CliRunner().invoke(main, ["faces-info", str(tmp_path / "video.mp4")])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {tmp_path / 'video.mp4'}: neither an insightface .rec/.idx pair " \
                                    "nor an <identity>/<image>.jpg folder"


def test_a_broken_record_file_exits_1_naming_it(faces: Path, tmp_path: Path) -> None:
    (tmp_path / "train.rec").write_bytes(b"\x01\x02\x03\x04" * 4)
    (tmp_path / "train.idx").write_text("0\t0\n")
    result = CliRunner().invoke(main, ["faces-info", str(tmp_path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{tmp_path / 'train.rec'}: record 0 at offset 0: wrong magic 0x04030201" in result.output


def test_a_set_with_garbage_mid_file_exits_1_naming_the_record(faces: Path, tmp_path: Path) -> None:
    import shutil

    from pipeline.data.faces.recordio import RecordReader

    root = Path(shutil.copytree(faces / "rec", tmp_path / "rec"))
    offset = RecordReader(root / "train.rec", root / "train.idx").index.offset(4)
    with (root / "train.rec").open("r+b") as fh:
        fh.seek(offset)
        fh.write(b"\x00" * 4096)
    result = CliRunner().invoke(main, ["faces-info", str(root)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output == f"Error: {root / 'train.rec'}: record 4 at offset {offset}: wrong magic 0x00000000 " \
                            "(expected 0xced7230a)\n"


def test_a_crafted_identity_range_exits_1_with_one_line(tmp_path: Path) -> None:
    from pipeline.data.faces.recordio import IRHeader, encode_record, pack_record

    (tmp_path / "train.rec").write_bytes(encode_record(pack_record(IRHeader(0, [3e9, 3e9], 0, 0), b"")))
    (tmp_path / "train.idx").write_text("0\t0\n")
    result = CliRunner().invoke(main, ["faces-info", str(tmp_path)])
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1
    assert result.output.startswith(f"Error: {tmp_path / 'train.rec'}: record 0 holds the identity range (3e+09, 3e+09)")
