"""MXNet IndexedRecordIO (``.rec`` + ``.idx``), read and written without mxnet.

The layout (dmlc-core's RecordIO, as insightface's ``train.rec`` uses it): each record is a uint32
magic ``0xced7230a``, a uint32 length word (lower 29 bits: byte length of this part; upper 3 bits:
continuation flag, 0 whole record, 1 first part, 2 middle part, 3 last part) and the payload padded
with zeros to 4 bytes. A writer splits a payload wherever the magic itself occurs at a 4-byte aligned
offset (the magic is dropped there and restored by the reader), so a reader can resynchronise on the
magic. The ``.idx`` file is text, one ``key<TAB>byte offset`` line per record.

An image record's payload starts with an IRHeader (struct ``<IfQQ``: flag, label, id, id2); when
``flag > 0`` the label is instead ``flag`` float32 values following the header; the image bytes come
last.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> with RecordWriter(root / "x.rec", root / "x.idx") as writer:
    ...     writer.write(0, pack_record(IRHeader(0, 7.0, 0, 0), b"abc"))
    >>> header, data = unpack_record(RecordReader(root / "x.rec", root / "x.idx").read(0))
    >>> header.label, data
    (7.0, b'abc')
"""

from __future__ import annotations

import os
import struct
import tempfile
import warnings
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Iterator, NamedTuple

import numpy as np

from pipeline.fsio import HOST

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LENGTH_BITS = 29
_LENGTH_MASK = (1 << _LENGTH_BITS) - 1
WHOLE, FIRST, MIDDLE, LAST = 0, 1, 2, 3
_IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(_IR_FORMAT)   # 24 bytes
# The most bytes one record (its continuation parts joined) may hold: an aligned face JPEG is a few
# KB, so a record announcing more is damage or a crafted file, refused before it is read.
MAX_RECORD_BYTES = 16 << 20


class RecordIOError(ValueError):
    """A ``.rec``/``.idx`` pair that does not hold what the format says; the message names file and offset."""


class IRHeader(NamedTuple):
    """The header of an image record: ``label`` is a float, or a float32 array when ``flag > 0``."""

    flag: int
    label: float | np.ndarray
    id: int
    id2: int


def pack_record(header: IRHeader, data: bytes) -> bytes:
    """Payload of one record: the IRHeader, the label array when it is one, then ``data``."""
    if np.ndim(header.label) == 0:
        return struct.pack(_IR_FORMAT, 0, float(header.label), header.id, header.id2) + data
    labels = np.asarray(header.label, dtype="<f4").ravel()
    return struct.pack(_IR_FORMAT, labels.size, 0.0, header.id, header.id2) + labels.tobytes() + data


def unpack_record(payload: bytes, where: str = "record") -> tuple[IRHeader, bytes]:
    """Split a record payload into its IRHeader and the bytes after it (``where`` names it in errors)."""
    if len(payload) < IR_SIZE:
        raise RecordIOError(f"{where}: {len(payload)} bytes, shorter than the {IR_SIZE}-byte IRHeader")
    flag, label, rid, rid2 = struct.unpack_from(_IR_FORMAT, payload)
    rest = payload[IR_SIZE:]
    if flag > 0:
        if len(rest) < 4 * flag:
            raise RecordIOError(f"{where}: IRHeader says {flag} float labels but only {len(rest)} bytes follow")
        labels = np.frombuffer(rest[:4 * flag], dtype="<f4").copy()
        return IRHeader(flag, labels, rid, rid2), rest[4 * flag:]
    return IRHeader(flag, float(label), rid, rid2), rest


class RecordIndex:
    """The ``.idx`` file as two int64 arrays (keys and offsets, in file order).

    Arrays rather than a dict: Glint360K's index has 17 million lines, and DataLoader workers touch
    a Python dict's objects (copy-on-write copies) but not a numpy array's pages.
    """

    def __init__(self, keys: np.ndarray, offsets: np.ndarray) -> None:
        self.keys, self.offsets = keys, offsets
        # the usual index numbers its records 0..N-1 in order: a key is then its own position
        self._dense = bool(len(keys) == 0 or (keys[0] == 0 and np.array_equal(keys, np.arange(len(keys)))))
        self._order = None if self._dense else np.argsort(keys, kind="stable")

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: int) -> bool:
        return self.position(key) is not None

    def position(self, key: int) -> int | None:
        """Line number (0-based) of ``key`` in the index, or None when absent."""
        if self._dense:
            return int(key) if 0 <= key < len(self.keys) else None
        at = int(np.searchsorted(self.keys, key, sorter=self._order))
        if at < len(self.keys) and self.keys[self._order[at]] == key:
            return int(self._order[at])
        return None

    def offset(self, key: int) -> int | None:
        """Byte offset of record ``key``, or None when the index lacks it."""
        at = self.position(key)
        return None if at is None else int(self.offsets[at])


def read_index(idx_path: str | Path) -> RecordIndex:
    """Parse a ``.idx`` file (``key<TAB>offset`` lines)."""
    idx_path = Path(idx_path)
    if not idx_path.is_file():
        raise FileNotFoundError(f"{idx_path}: index file not found (a .rec needs its .idx beside it)")
    text = idx_path.read_bytes().rstrip()
    lines = text.count(b"\n") + 1 if text else 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)   # a bad token: found by the line check below
            numbers = np.fromstring(text, dtype=np.int64, sep=" ") if lines else np.zeros(0, np.int64)
    except ValueError:   # numpy >= 2 refuses a non-numeric token, naming neither file nor line
        numbers = np.zeros(0, np.int64)
    if len(numbers) != 2 * lines or text.count(b"\t") != lines:
        _raise_first_bad_line(idx_path, text)
    pairs = numbers.reshape(-1, 2)
    return RecordIndex(pairs[:, 0].copy(), pairs[:, 1].copy())


def _raise_first_bad_line(idx_path: Path, text: bytes) -> None:
    for number, line in enumerate(text.decode(errors="replace").splitlines(), 1):
        fields = line.split("\t")
        if line.strip() and (len(fields) != 2 or not all(f.strip().lstrip("-").isdigit() for f in fields)):
            raise RecordIOError(f"{idx_path}:{number}: expected 'key<TAB>offset', got {line.rstrip()!r}")
    raise RecordIOError(f"{idx_path}: not a 'key<TAB>offset' index")


class RecordReader:
    """Random access to the records of a ``.rec`` through its ``.idx``.

    The file is opened lazily, once per process (the pid is checked on each read), and read with
    positional reads (``os.pread``), so a reader made before a DataLoader forks its workers, handed
    to several processes or used from several threads never shares a file position.
    """

    def __init__(self, rec_path: str | Path, idx_path: str | Path) -> None:
        self.rec_path = Path(rec_path)
        if not self.rec_path.is_file():
            raise FileNotFoundError(f"{self.rec_path}: record file not found")
        self.index = read_index(idx_path)
        self.size = self.rec_path.stat().st_size
        self._handle: int | None = None
        self._pid = -1

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handle"], state["_pid"] = None, -1   # a pickled copy opens its own file
        return state

    def keys(self) -> np.ndarray:
        """The record keys (int64), in index order."""
        return self.index.keys

    def read(self, key: int) -> bytes:
        """The payload of record ``key`` (continuation parts joined)."""
        offset = self.index.offset(key)
        if offset is None:
            raise KeyError(f"{self.rec_path}: no record {key} in the index")
        return self.read_at(offset, f"{self.rec_path}: record {key}")

    def read_at(self, offset: int, where: str) -> bytes:
        """The payload of the record starting at byte ``offset``."""
        fd = self._fd()
        parts: list[bytes] = []
        for pos, length, last in self._parts(offset, where):
            parts.append(os.pread(fd, length, pos + 8))
            if not last:
                parts.append(_MAGIC_BYTES)   # the writer cut the payload at a magic it dropped
        payload = b"".join(parts)
        if not payload:
            raise RecordIOError(f"{where} at offset {offset}: empty record")
        return payload

    def read_head(self, key: int, size: int) -> bytes:
        """The first ``size`` bytes (or fewer, when shorter) of record ``key``'s payload, its framing
        checked through to its last part: a cheap check of a record without reading its image."""
        offset = self.index.offset(key)
        if offset is None:
            raise KeyError(f"{self.rec_path}: no record {key} in the index")
        parts = self._parts(offset, f"{self.rec_path}: record {key}")
        if sum(length for _, length, _ in parts) == 0 and len(parts) == 1:
            raise RecordIOError(f"{self.rec_path}: record {key} at offset {offset}: empty record")
        fd = self._fd()
        head = b""
        for pos, length, last in parts:
            if len(head) >= size:
                break
            head += os.pread(fd, min(length, size - len(head)), pos + 8) + (b"" if last else _MAGIC_BYTES)
        return head[:size]

    def heads(self, keys: np.ndarray, size: int) -> Iterator[tuple[int, bytes]]:
        """``(key, first size bytes of its payload)`` for each of ``keys``, every record's framing
        checked as :meth:`read_head` does; one positional read per single-part record (the usual kind),
        so checking a 17-million-record file costs 17 million small reads and no image decoding."""
        fd = self._fd()
        for key in keys.tolist():
            offset = self.index.offset(key)
            if offset is None:
                raise KeyError(f"{self.rec_path}: no record {key} in the index")
            block = os.pread(fd, 8 + size, offset) if 0 <= offset else b""
            if len(block) >= 8:
                magic, word = struct.unpack_from("<II", block)
                length = word & _LENGTH_MASK
                if (magic == MAGIC and word >> _LENGTH_BITS == WHOLE and 0 < length <= MAX_RECORD_BYTES
                        and offset + 8 + ((length + 3) & ~3) <= self.size):
                    yield key, block[8:8 + min(length, size)]
                    continue
            yield key, self.read_head(key, size)   # several parts, or a fault: the full check names it

    def _parts(self, offset: int, where: str) -> list[tuple[int, int, bool]]:
        """``(position, length, is_last)`` of each part of the record at ``offset``, every part header
        checked (magic, continuation flag, inside the file) and the total checked against
        :data:`MAX_RECORD_BYTES` before any payload is read."""
        fd = self._fd()
        parts: list[tuple[int, int, bool]] = []
        pos, total = offset, 0
        while True:
            if pos < 0 or pos + 8 > self.size:
                raise RecordIOError(f"{where} at offset {pos}: outside the file ({self.size} bytes)")
            # positional reads: no file position to share between threads or forked processes
            magic, word = struct.unpack("<II", os.pread(fd, 8, pos))
            if magic != MAGIC:
                raise RecordIOError(f"{where} at offset {pos}: wrong magic 0x{magic:08x} (expected 0x{MAGIC:08x})")
            flag, length = word >> _LENGTH_BITS, word & _LENGTH_MASK
            if flag > LAST or (flag in (WHOLE, FIRST)) != (pos == offset):
                raise RecordIOError(f"{where} at offset {pos}: continuation flag {flag} where "
                                    f"{'a record starts' if pos == offset else 'a part continues'}")
            padded = (length + 3) & ~3
            if pos + 8 + padded > self.size:
                raise RecordIOError(f"{where} at offset {pos}: {length} bytes announced, file ends first")
            total += length + (flag != WHOLE and flag != LAST) * len(_MAGIC_BYTES)
            if total > MAX_RECORD_BYTES:
                raise RecordIOError(f"{where} at offset {offset}: more than {MAX_RECORD_BYTES} bytes in one "
                                    "record, far more than a face image; the file is damaged")
            parts.append((pos, length, flag in (WHOLE, LAST)))
            pos += 8 + padded
            if flag in (WHOLE, LAST):
                return parts

    def close(self) -> None:
        """Close this process's file descriptor (a later read reopens it)."""
        if self._handle is not None and self._pid == os.getpid():
            os.close(self._handle)
        self._handle, self._pid = None, -1

    def _fd(self) -> int:
        if self._pid != os.getpid():
            self._handle = os.open(self.rec_path, os.O_RDONLY)   # the parent's stays with the parent
            self._pid = os.getpid()
        return self._handle


class RecordWriter:
    """Write records and their index: ``write(key, payload)`` appends one record.

    Writes to temporary names and renames both onto ``rec_path``/``idx_path`` on a clean exit of the
    ``with`` block (the ``.idx`` last, so a complete index always points into a complete file).
    """

    def __init__(self, rec_path: str | Path, idx_path: str | Path) -> None:
        self.rec_path, self.idx_path = Path(rec_path), Path(idx_path)
        self._tmp_rec = self._tmp_idx = Path()
        self._rec = None
        self._idx = None
        self._pos = 0

    def __enter__(self) -> "RecordWriter":
        self.rec_path.parent.mkdir(parents=True, exist_ok=True)
        self.idx_path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp_rec, self._rec = _fresh_temporary(self.rec_path, "wb")
        self._tmp_idx, self._idx = _fresh_temporary(self.idx_path, "w")
        return self

    def write(self, key: int, payload: bytes) -> None:
        """Append ``payload`` as record ``key``."""
        if self._rec is None:
            raise RuntimeError(f"{self.rec_path}: write() outside the writer's with block")
        if not payload:
            raise ValueError(f"{self.rec_path}: record {key} is empty")
        self._idx.write(f"{key}\t{self._pos}\n")
        chunks = encode_record(payload)
        self._rec.write(chunks)
        self._pos += len(chunks)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._rec.close()
        self._idx.close()
        if exc_type is None:
            os.replace(self._tmp_rec, self.rec_path)
            os.replace(self._tmp_idx, self.idx_path)
        else:
            self._tmp_rec.unlink(missing_ok=True)
            self._tmp_idx.unlink(missing_ok=True)


def _fresh_temporary(target: Path, mode: str) -> tuple[Path, IO[Any]]:
    """A new file beside ``target``, created exclusively under an unpredictable name (``mkstemp``:
    no link planted at a guessed name is followed), opened in ``mode``."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-{HOST}-{os.getpid()}-", dir=target.parent)
    return Path(name), os.fdopen(fd, mode)


def encode_record(payload: bytes) -> bytes:
    """The bytes of one record: split at aligned magics, each part framed, padded to 4 bytes."""
    if len(payload) > _LENGTH_MASK:
        raise ValueError(f"record of {len(payload)} bytes exceeds the format's {_LENGTH_MASK}-byte limit")
    cuts, i = [], payload.find(_MAGIC_BYTES)
    while i != -1:   # only aligned occurrences count, as in dmlc-core's writer
        if i % 4 == 0:
            cuts.append(i)
            i = payload.find(_MAGIC_BYTES, i + 4)
        else:
            i = payload.find(_MAGIC_BYTES, i + 1)
    out, start = [], 0
    for n, cut in enumerate(cuts):
        out.append(_frame(FIRST if n == 0 else MIDDLE, payload[start:cut]))
        start = cut + 4
    out.append(_frame(LAST if cuts else WHOLE, payload[start:]))
    return b"".join(out)


def _frame(flag: int, part: bytes) -> bytes:
    pad = (-len(part)) % 4
    return struct.pack("<II", MAGIC, (flag << _LENGTH_BITS) | len(part)) + part + b"\0" * pad
