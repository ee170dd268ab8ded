"""insightface RecordIO training sets (`train.rec` + `train.idx` [+ `property`]), read and written, no mxnet.

The layout of MS1MV2/MS1MV3, Glint360K, WebFace and CASIA-WebFace as distributed:

- **Record framing** (dmlc RecordIO). Each record is a little-endian uint32 magic `0xced7230a`, a uint32
  `lrec` = `cflag << 29 | length`, `length` payload bytes, then zero padding to a multiple of 4. A payload
  that contains the magic at a 4-byte aligned offset is split there: the parts carry cflag 1 (first),
  2 (middle) and 3 (last), the magic itself is dropped and put back between the parts on reading; cflag 0 is
  a whole record.
- **Payload** (mxnet image record). A 24-byte header `<IfQQ`: `flag` (uint32), `label` (float32), `id` and
  `id2` (uint64). With `flag > 0` the label is instead the `flag` float32 values after the header. Then the
  encoded image (JPEG or PNG, 112x112 aligned face).
- **Index** `train.idx`: text lines `key<TAB>byte offset`, one per record: random access by key.
- **insightface convention**. Record 0 is a header whose label is `(first identity record, end)` when its
  flag is > 0; images are keys `1 .. first-1`, and each key in `[first, end)` is one identity whose label is
  the range `(start, end)` of its image keys. Without that header every key is an image labelled by the
  first value of its label. `property` holds `num_classes,112,112`.

`RecordFile` reads (one open file per process, so DataLoader workers may share an instance); `write_recordio`
writes all three files atomically.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.artifact import write_atomic

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_FRAME = struct.Struct("<II")  # magic, lrec
IR_HEADER = struct.Struct("<IfQQ")  # flag, label, id, id2
_LENGTH_BITS = 29
_MAX_LENGTH = (1 << _LENGTH_BITS) - 1


class RecordIOError(ValueError):
    """A `.rec`/`.idx` pair that cannot be read (missing, truncated, bad magic, unknown key)."""


@dataclass(frozen=True)
class ImageRecord:
    """One unpacked record: `flag`, `label` (float32 values: 1 when flag is 0, else `flag` of them), ids,
    and the encoded image bytes (empty for insightface's header and identity records)."""

    flag: int
    label: tuple[float, ...]
    id: int
    id2: int
    image: bytes


def pack_record(label: float | Iterable[float], image: bytes, record_id: int = 0, id2: int = 0) -> bytes:
    """mxnet `recordio.pack`: a scalar label is stored in the header (flag 0); a sequence as `flag` floats."""
    if isinstance(label, (int, float, np.integer, np.floating)):
        return IR_HEADER.pack(0, float(label), record_id, id2) + image
    values = np.asarray(list(label), dtype="<f4")
    return IR_HEADER.pack(len(values), 0.0, record_id, id2) + values.tobytes() + image


def unpack_record(payload: bytes) -> ImageRecord:
    """mxnet `recordio.unpack` of one payload -> `ImageRecord`."""
    if len(payload) < IR_HEADER.size:
        raise RecordIOError(
            f"record of {len(payload)} bytes is shorter than its {IR_HEADER.size}-byte header"
        )
    flag, label, record_id, id2 = IR_HEADER.unpack_from(payload)
    rest = payload[IR_HEADER.size :]
    if flag > 0:
        if len(rest) < 4 * flag:
            raise RecordIOError(f"record declares {flag} labels but holds {len(rest)} bytes")
        labels = tuple(float(v) for v in np.frombuffer(rest, dtype="<f4", count=flag))
        rest = rest[4 * flag :]
    else:
        labels = (float(label),)
    return ImageRecord(flag, labels, record_id, id2, bytes(rest))


def frame_record(payload: bytes) -> bytes:
    """dmlc `RecordIOWriter::WriteRecord`: payload -> framed bytes (split at aligned magics, padded to 4)."""
    if len(payload) > _MAX_LENGTH:
        raise RecordIOError(f"record of {len(payload)} bytes exceeds RecordIO's {_MAX_LENGTH}")
    parts: list[bytes] = []
    start = 0
    for offset in range(0, len(payload) - 3, 4):
        if payload[offset : offset + 4] == _MAGIC_BYTES:
            cflag = 1 if start == 0 else 2
            parts.append(_FRAME.pack(MAGIC, cflag << _LENGTH_BITS | (offset - start)) + payload[start:offset])
            start = offset + 4
    cflag = 3 if start else 0
    tail = payload[start:]
    parts.append(_FRAME.pack(MAGIC, cflag << _LENGTH_BITS | len(tail)) + tail + bytes(-len(tail) % 4))
    return b"".join(parts)


def read_index(idx_path: Path) -> dict[int, int]:
    """`.idx` text -> {key: byte offset}."""
    offsets: dict[int, int] = {}
    try:
        lines = Path(idx_path).read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordIOError(f"cannot read index {idx_path}: {exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or not fields[0].isdigit() or not fields[1].isdigit():
            raise RecordIOError(f"{idx_path}:{number}: expected 'key<TAB>offset', got {line!r}")
        offsets[int(fields[0])] = int(fields[1])
    if not offsets:
        raise RecordIOError(f"index {idx_path} is empty")
    return offsets


def index_path_for(rec_path: Path) -> Path:
    """`x.rec` -> `x.idx`."""
    return Path(rec_path).with_suffix(".idx")


class RecordFile:
    """Random access to the records of a `.rec` file through its `.idx`.

    The file handle is opened lazily and re-opened in a new process, so an instance can be pickled into
    DataLoader workers.
    """

    def __init__(self, rec_path: Path, idx_path: Path | None = None) -> None:
        self.path = Path(rec_path)
        if not self.path.is_file():
            raise RecordIOError(f"record file not found: {self.path}")
        idx = Path(idx_path) if idx_path is not None else index_path_for(self.path)
        if not idx.is_file():
            raise RecordIOError(f"index not found: {idx} (a .rec needs its .idx for random access)")
        self.offsets = read_index(idx)
        stat = self.path.stat()
        self.size, self.mtime_ns = stat.st_size, stat.st_mtime_ns
        self._handle = None
        self._pid = -1

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None, "_pid": -1}

    def _file(self):
        if self._handle is None or self._pid != os.getpid():
            self._handle = self.path.open("rb")
            self._pid = os.getpid()
        return self._handle

    def sorted_keys(self) -> list[int]:
        return sorted(self.offsets)

    def read_payload(self, key: int) -> bytes:
        """The payload of record `key`, continuation parts joined."""
        try:
            offset = self.offsets[key]
        except KeyError:
            raise RecordIOError(f"{self.path}: no record with key {key}") from None
        handle = self._file()
        handle.seek(offset)
        parts: list[bytes] = []
        while True:
            frame = handle.read(_FRAME.size)
            if len(frame) < _FRAME.size:
                raise RecordIOError(f"{self.path}: record {key} is truncated")
            magic, lrec = _FRAME.unpack(frame)
            if magic != MAGIC:
                raise RecordIOError(
                    f"{self.path}: bad magic {magic:#x} in record {key} (not a RecordIO file?)"
                )
            cflag, length = lrec >> _LENGTH_BITS, lrec & _MAX_LENGTH
            data = handle.read(length + (-length % 4))
            if len(data) < length:
                raise RecordIOError(f"{self.path}: record {key} is truncated")
            parts.append(data[:length])
            if cflag in (0, 3):
                return _MAGIC_BYTES.join(parts)

    def read(self, key: int) -> ImageRecord:
        return unpack_record(self.read_payload(key))


@dataclass(frozen=True)
class RecordDataset:
    """What a `.rec` holds for training: image `keys` (N,) int64 and their identity `labels` (N,) int64 in
    [0, num_identities), and `identity_names` (from the labels' values)."""

    file: RecordFile
    keys: np.ndarray
    labels: np.ndarray
    identity_names: list[str]


def _identity_name(label: float) -> str:
    return str(int(label)) if float(label).is_integer() else str(label)


def scan_record_dataset(rec_path: Path) -> RecordDataset:
    """Images and labels of an insightface `.rec`: from the identity ranges when record 0 is a header with
    flag > 0 (reads one record per identity), else from every record's header (reads every record)."""
    file = RecordFile(rec_path)
    first = file.read(0) if 0 in file.offsets else None
    if first is not None and first.flag > 0 and not first.image and len(first.label) >= 2:
        id_start, id_end = int(first.label[0]), int(first.label[1])
        keys, labels, names = [], [], []
        for identity_key in range(id_start, id_end):
            record = file.read(identity_key)
            if len(record.label) < 2:
                raise RecordIOError(f"{file.path}: identity record {identity_key} has no (start, end) range")
            start, end = int(record.label[0]), int(record.label[1])
            if end <= start:
                continue
            keys.append(np.arange(start, end, dtype=np.int64))
            labels.append(np.full(end - start, len(names), dtype=np.int64))
            names.append(_identity_name(file.read(start).label[0]))
        if not keys:
            raise RecordIOError(f"{file.path}: the header record lists no identity with images")
        return RecordDataset(file, np.concatenate(keys), np.concatenate(labels), names)
    image_keys, values = [], []
    for key in file.sorted_keys():
        record = file.read(key)
        if record.image:
            image_keys.append(key)
            values.append(record.label[0])
    if not image_keys:
        raise RecordIOError(f"{file.path}: no image records")
    distinct, labels_arr = np.unique(np.asarray(values, dtype=np.float64), return_inverse=True)
    return RecordDataset(
        file,
        np.asarray(image_keys, dtype=np.int64),
        labels_arr.astype(np.int64),
        [_identity_name(v) for v in distinct],
    )


def write_recordio(rec_path: Path, identities: Sequence[Sequence[bytes | Path]]) -> tuple[int, int]:
    """Write an insightface `.rec` + `.idx` + `property` from encoded images grouped by identity.

    Images are bytes, or image files read one at a time. Identity k's images get label k; record 0 is the
    header, then images, then one range record per identity. All three files are replaced atomically.
    Returns (identities, images).
    """
    rec_path = Path(rec_path)
    groups = [g for g in identities if len(g)]
    if not groups:
        raise RecordIOError("nothing to pack: no identity with images")
    num_images = sum(len(g) for g in groups)
    first_identity_key = num_images + 1
    end_key = first_identity_key + len(groups)
    offsets: list[tuple[int, int]] = []

    def write_rec(temp: Path) -> None:
        with temp.open("wb") as out:

            def put(key: int, payload: bytes) -> None:
                offsets.append((key, out.tell()))
                out.write(frame_record(payload))

            put(0, pack_record((first_identity_key, end_key), b""))
            key = 1
            ranges = []
            for label, images in enumerate(groups):
                ranges.append((key, key + len(images)))
                for image in images:
                    encoded = image.read_bytes() if isinstance(image, Path) else image
                    put(key, pack_record(float(label), encoded, record_id=key))
                    key += 1
            for label, (start, end) in enumerate(ranges):
                put(first_identity_key + label, pack_record((start, end), b"", record_id=label))

    write_atomic(rec_path, write_rec)
    index_text = "".join(f"{key}\t{offset}\n" for key, offset in offsets)
    write_atomic(index_path_for(rec_path), lambda temp: temp.write_text(index_text, encoding="ascii"))
    write_atomic(
        rec_path.with_name("property"),
        lambda temp: temp.write_text(f"{len(groups)},112,112", encoding="ascii"),
    )
    return len(groups), num_images
