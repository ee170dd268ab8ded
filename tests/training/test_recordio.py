"""insightface RecordIO: framing and headers byte for byte, the writer, and the reader's labels and ranges."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.cli import main as cli_main
from training.data import DatasetError, RecordRef, read_face, scan_identities
from training.recordio import (
    MAGIC,
    RecordFile,
    RecordIOError,
    frame_record,
    pack_record,
    scan_record_dataset,
    unpack_record,
    write_recordio,
)

MAGIC_BYTES = struct.pack("<I", MAGIC)


def _png(value: int) -> bytes:
    face = np.full((112, 112, 3), value, np.uint8)
    face[10:20, 30:40] = 255 - value
    return cv2.imencode(".png", face)[1].tobytes()


def test_a_record_is_magic_length_payload_and_padding_to_four_bytes():
    payload = pack_record(3.0, b"abc", record_id=7)
    assert payload == struct.pack("<IfQQ", 0, 3.0, 7, 0) + b"abc"
    framed = frame_record(payload)
    assert framed == MAGIC_BYTES + struct.pack("<I", 27) + payload + b"\0"
    assert len(framed) % 4 == 0


def test_a_vector_label_goes_after_the_header_with_its_count_as_flag():
    payload = pack_record((5, 9), b"")
    assert payload == struct.pack("<IfQQ", 2, 0.0, 0, 0) + struct.pack("<2f", 5, 9)
    record = unpack_record(payload)
    assert (record.flag, record.label, record.image) == (2, (5.0, 9.0), b"")


def test_payload_holding_the_magic_is_split_and_read_back_whole(tmp_path: Path):
    # the magic at aligned offsets 24+4 and 24+12 splits the record into 3 parts (cflag 1, 2, 3)
    image = b"abcd" + MAGIC_BYTES + b"efgh" + MAGIC_BYTES + b"xyz" + MAGIC_BYTES[:2]
    payload = pack_record(1.0, image)
    framed = frame_record(payload)
    flags = []
    position = 0
    while position < len(framed):
        magic, lrec = struct.unpack_from("<II", framed, position)
        assert magic == MAGIC
        flags.append(lrec >> 29)
        position += 8 + (((lrec & (2**29 - 1)) + 3) // 4) * 4
    assert flags == [1, 2, 3]
    (tmp_path / "x.rec").write_bytes(framed)
    (tmp_path / "x.idx").write_text("0\t0\n")
    assert RecordFile(tmp_path / "x.rec").read(0).image == image


def test_writer_lays_out_images_identity_ranges_and_the_header(tmp_path: Path):
    rec = tmp_path / "train.rec"
    groups = [[_png(10), _png(20)], [_png(30)], [_png(40), _png(50), _png(60)]]
    assert write_recordio(rec, groups) == (3, 6)
    assert (tmp_path / "property").read_text() == "3,112,112"
    index = [line.split("\t") for line in (tmp_path / "train.idx").read_text().splitlines()]
    assert [int(k) for k, _ in index] == list(range(10))  # header, 6 images, 3 identities
    file = RecordFile(rec)
    header = file.read(0)
    assert header.flag == 2 and header.label == (7.0, 10.0) and header.image == b""
    assert [file.read(k).label for k in (7, 8, 9)] == [(1.0, 3.0), (3.0, 4.0), (4.0, 7.0)]
    assert [file.read(k).label[0] for k in range(1, 7)] == [0, 0, 1, 2, 2, 2]
    assert file.read(5).image == groups[2][1]

    dataset = scan_record_dataset(rec)
    assert dataset.keys.tolist() == [1, 2, 3, 4, 5, 6]
    assert dataset.labels.tolist() == [0, 0, 1, 2, 2, 2]
    identities = scan_identities(rec)
    assert [i.name for i in identities] == [f"{tmp_path.name}/{k}" for k in range(3)]
    assert read_face(identities[2].files[0])[0, 0].tolist() == [40, 40, 40]


def test_without_a_header_record_labels_come_from_every_record(tmp_path: Path):
    rec = tmp_path / "plain.rec"
    labels = [4.0, 2.0, 4.0]
    offsets, blob = [], b""
    for key, label in enumerate(labels):
        offsets.append(f"{key}\t{len(blob)}\n")
        blob += frame_record(pack_record(label, _png(int(label) * 10)))
    rec.write_bytes(blob)
    (tmp_path / "plain.idx").write_text("".join(offsets))
    dataset = scan_record_dataset(rec)
    assert dataset.keys.tolist() == [0, 1, 2]
    assert dataset.labels.tolist() == [1, 0, 1] and dataset.identity_names == ["2", "4"]


def test_bad_files_are_clear_errors(tmp_path: Path):
    rec = tmp_path / "train.rec"
    rec.write_bytes(b"\0" * 64)
    with pytest.raises(RecordIOError, match="index not found"):
        RecordFile(rec)
    (tmp_path / "train.idx").write_text("0\t0\n")
    with pytest.raises(RecordIOError, match="bad magic"):
        RecordFile(rec).read(0)
    with pytest.raises(RecordIOError, match="no record with key 5"):
        RecordFile(rec).read_payload(5)
    with pytest.raises(DatasetError, match="bad magic"):
        scan_identities(rec)
    (tmp_path / "train.idx").write_text("zero\t0\n")
    with pytest.raises(RecordIOError, match="train.idx:1"):
        RecordFile(rec)


def test_record_refs_reopen_their_file_after_pickling(tmp_path: Path):
    import pickle

    rec = tmp_path / "train.rec"
    write_recordio(rec, [[_png(10)], [_png(20)]])
    ref = scan_identities(rec)[1].files[0]
    assert isinstance(ref, RecordRef)
    clone = pickle.loads(pickle.dumps(ref))
    assert np.array_equal(read_face(clone), read_face(ref))


def test_pack_command_packs_an_aligned_folder_and_refuses_raw_photos(tmp_path: Path, capsys):
    for name, values in {"ann": (10, 20), "bob": (30,)}.items():
        (tmp_path / "faces" / name).mkdir(parents=True)
        for value in values:
            (tmp_path / "faces" / name / f"{value}.png").write_bytes(_png(value))
    out = tmp_path / "packed" / "train.rec"
    assert cli_main(["pack", str(tmp_path / "faces"), str(out)]) == 0
    assert [len(i.files) for i in scan_identities(out)] == [2, 1]
    assert RecordFile(out).read(1).image == (tmp_path / "faces" / "ann" / "10.png").read_bytes()

    raw = tmp_path / "raw" / "carl"
    raw.mkdir(parents=True)
    cv2.imwrite(str(raw / "big.png"), np.zeros((300, 200, 3), np.uint8))
    assert cli_main(["pack", str(tmp_path / "raw"), str(tmp_path / "r.rec")]) == 2
    assert "drface prepare" in capsys.readouterr().err
