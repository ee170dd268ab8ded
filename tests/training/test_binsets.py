"""Verification .bin sets: only bytes, lists, tuples and bools are admitted; nothing in a file is executed."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.binsets import BIN_FOLDS, BinSetError, load_bin, read_bin_pickle, write_bin


def _jpeg(value: int) -> bytes:
    return cv2.imencode(".jpg", np.full((112, 112, 3), value, np.uint8))[1].tobytes()


class _WritesAFile:
    """A pickle payload: unpickling it calls Path.write_text(target, 'owned')."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.write_text, (self.target, "owned"))


def test_a_written_set_reads_back_with_pairs_and_ten_consecutive_folds(tmp_path: Path):
    images = [_jpeg(v) for v in range(0, 200, 5)]  # 40 images = 20 pairs
    same = [k % 2 == 0 for k in range(20)]
    write_bin(tmp_path / "lfw.bin", images, same)
    binset = load_bin(tmp_path / "lfw.bin")
    assert binset.name == "lfw" and binset.faces.shape == (40, 112, 112, 3)
    assert binset.same.tolist() == same
    assert binset.pairs[3].tolist() == [6, 7]
    assert binset.folds.tolist() == [k // 2 for k in range(20)] and binset.folds.max() == BIN_FOLDS - 1


def test_python2_pickles_of_byte_strings_are_read(tmp_path: Path):
    image = _jpeg(128)
    # protocol 2 as Python 2 wrote it: str -> BINSTRING, list/tuple/bool opcodes, memo puts
    binstring = b"T" + struct.pack("<I", len(image)) + image
    data = b"\x80\x02]q\x00(" + binstring + binstring + b"e]q\x01\x88a\x86q\x02."  # ([image, image], [True])
    (tmp_path / "old.bin").write_bytes(data)
    images, same = read_bin_pickle(tmp_path / "old.bin")
    assert images == [image, image] and same == [True]


def test_a_payload_that_would_write_a_file_is_refused_and_not_run(tmp_path: Path):
    live, target = tmp_path / "proof.txt", tmp_path / "owned.txt"
    pickle.loads(pickle.dumps(_WritesAFile(live)))
    assert live.read_text() == "owned"  # the payload is real: plain pickle runs it

    payload = pickle.dumps(([_jpeg(1), _WritesAFile(target)], [True]), protocol=4)
    (tmp_path / "evil.bin").write_bytes(payload)
    with pytest.raises(BinSetError, match="refused, not a plain verification set"):
        load_bin(tmp_path / "evil.bin")
    assert not target.exists()

    old_style = pickle.dumps(([_jpeg(1), _WritesAFile(target)], [True]), protocol=0)
    (tmp_path / "evil0.bin").write_bytes(old_style)
    with pytest.raises(BinSetError, match="refused"):
        load_bin(tmp_path / "evil0.bin")
    assert not target.exists()


@pytest.mark.parametrize(
    "content, message",
    [
        (({"a": 1}, [True]), "refused.*EMPTY_DICT"),
        (([b"x", b"y"], [1]), "refused.*BININT1"),
        (([b"x", b"y", b"z"], [True]), "3 images for 1 pairs"),
        ((b"x", [True]), "list of encoded images"),
    ],
)
def test_anything_but_images_and_flags_is_refused(tmp_path: Path, content, message):
    (tmp_path / "x.bin").write_bytes(pickle.dumps(content, protocol=4))
    with pytest.raises(BinSetError, match=message):
        read_bin_pickle(tmp_path / "x.bin")


def test_not_a_pickle_and_undecodable_images_are_clear_errors(tmp_path: Path):
    (tmp_path / "junk.bin").write_bytes(b"\x00\x01garbage")
    with pytest.raises(BinSetError, match="junk.bin"):
        load_bin(tmp_path / "junk.bin")
    write_bin(tmp_path / "bad.bin", [_jpeg(3), b"not an image"], [False])
    with pytest.raises(BinSetError, match="image 1 cannot be decoded"):
        load_bin(tmp_path / "bad.bin")


def test_pack_makes_a_balanced_bin_from_a_folder_or_a_rec(tmp_path: Path):
    from app.cli import main as cli_main
    from training.recordio import write_recordio

    for person in range(5):
        (tmp_path / "faces" / f"p{person}").mkdir(parents=True)
        for k in range(4):  # a person's faces share their colour: a pair is genuine iff its colours match
            path = tmp_path / "faces" / f"p{person}" / f"{k}.png"
            cv2.imwrite(str(path), np.full((112, 112, 3), 40 * person + k % 2, np.uint8))
    assert cli_main(["pack", str(tmp_path / "faces"), str(tmp_path / "mine.bin"), "--pairs", "40"]) == 0
    binset = load_bin(tmp_path / "mine.bin")
    assert len(binset.same) == 40 and binset.same.sum() == 20
    colour = binset.faces[:, 0, 0, 0].astype(int) // 40
    np.testing.assert_array_equal(colour[0::2] == colour[1::2], binset.same)
    for fold in range(BIN_FOLDS):  # every fold holds both kinds of pair
        assert set(binset.same[binset.folds == fold].tolist()) == {True, False}

    people = sorted((tmp_path / "faces").iterdir())
    write_recordio(tmp_path / "train.rec", [sorted(p.iterdir()) for p in people])
    assert (
        cli_main(["pack", str(tmp_path / "train.rec"), str(tmp_path / "fromrec.bin"), "--pairs", "20"]) == 0
    )
    assert len(load_bin(tmp_path / "fromrec.bin").same) == 20
