"""Protocol parsers: the real CFP layout, and LFW / CSV pairs files generated on the fly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.protocols import (
    Protocol,
    ProtocolError,
    balanced_folds,
    load_cfp,
    load_csv_pairs,
    load_lfw_pairs,
    load_pairs_file,
)


@pytest.fixture(scope="module")
def cfp(cfp_root: Path) -> dict[str, Protocol]:
    return load_cfp(cfp_root)


def _touch_images(root: Path, names: list[str]) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


@pytest.mark.data
def test_cfp_has_ten_folds_of_350_same_and_350_diff_pairs_per_split(cfp: dict[str, Protocol]):
    protocols = cfp
    assert set(protocols) == {"cfp_ff", "cfp_fp"}
    for protocol in protocols.values():
        assert len(protocol.images) == 7000
        assert protocol.pairs.shape == (7000, 2)
        assert protocol.num_folds == 10
        for fold in range(10):
            in_fold = protocol.folds == fold
            assert protocol.labels[in_fold].sum() == 350
            assert (~protocol.labels[in_fold]).sum() == 350


@pytest.mark.data
def test_cfp_splits_share_one_image_list_and_pair_the_right_poses(cfp: dict[str, Protocol], cfp_root: Path):
    protocols = cfp
    ff, fp = protocols["cfp_ff"], protocols["cfp_fp"]
    assert ff.images is fp.images
    images = ff.images
    assert all(images[i].parent.name == "frontal" for i in np.unique(ff.pairs))
    assert all(images[i].parent.name == "frontal" for i in fp.pairs[:, 0])
    assert all(images[i].parent.name == "profile" for i in fp.pairs[:, 1])
    # Same-identity pairs share the identity folder; different-identity pairs never do.
    identity = np.array([path.parent.parent.name for path in images])
    for protocol in (ff, fp):
        same_person = identity[protocol.pairs[:, 0]] == identity[protocol.pairs[:, 1]]
        np.testing.assert_array_equal(same_person, protocol.labels)
    # Official first line of Split/FP/01/same.txt is "5,1": frontal 5 vs profile 1 of person 001.
    assert images[fp.pairs[0, 0]].relative_to(cfp_root).as_posix() == "Data/Images/001/frontal/05.jpg"
    assert images[fp.pairs[0, 1]].relative_to(cfp_root).as_posix() == "Data/Images/001/profile/01.jpg"


@pytest.mark.data
def test_cfp_subset_keeps_folds_balanced_and_only_used_images(cfp: dict[str, Protocol]):
    small = cfp["cfp_fp"].subset(folds=2, max_pairs=8)
    assert len(small.pairs) == 8
    assert small.num_folds == 2
    assert small.labels.sum() == 4
    assert len(small.images) == len(np.unique(small.pairs)) <= 16


def test_cfp_malformed_split_line_names_file_and_line(tmp_path: Path):
    protocol_dir = tmp_path / "Protocol"
    _touch_images(tmp_path, ["Data/a.jpg", "Data/b.jpg"])
    protocol_dir.mkdir()
    (protocol_dir / "Pair_list_F.txt").write_text("1 ../Data/a.jpg\n2 ../Data/b.jpg\n")
    (protocol_dir / "Pair_list_P.txt").write_text("1 ../Data/b.jpg\n")
    fold = protocol_dir / "Split" / "FF" / "01"
    fold.mkdir(parents=True)
    (fold / "same.txt").write_text("1,2\n2;1\n")
    (fold / "diff.txt").write_text("1,2\n")
    with pytest.raises(ProtocolError, match=r"same\.txt:2: expected 'i,j'"):
        load_cfp(tmp_path, splits=["cfp_ff"])


def test_cfp_missing_root_is_a_typed_error(tmp_path: Path):
    with pytest.raises(ProtocolError, match="not a CFP root"):
        load_cfp(tmp_path)


def test_lfw_pairs_file_with_fold_header(tmp_path: Path):
    _touch_images(tmp_path, ["Ann/Ann_0001.jpg", "Ann/Ann_0002.jpg", "Bob/Bob_0001.jpg", "Cid/Cid_0003.jpg"])
    (tmp_path / "pairs.txt").write_text("2\t1\nAnn\t1\t2\nAnn\t1\tBob\t1\nAnn\t2\t1\nBob\t1\tCid\t3\n")
    protocol = load_lfw_pairs(tmp_path / "pairs.txt")
    np.testing.assert_array_equal(protocol.labels, [True, False, True, False])
    np.testing.assert_array_equal(protocol.folds, [0, 0, 1, 1])
    assert len(protocol.images) == 4  # Ann_0001 appears in three pairs, stored once
    first, second = (protocol.images[i] for i in protocol.pairs[1])
    assert (first.name, second.name) == ("Ann_0001.jpg", "Bob_0001.jpg")


def test_lfw_pairs_count_mismatch_and_bad_line_are_reported(tmp_path: Path):
    _touch_images(tmp_path, ["Ann/Ann_0001.jpg", "Ann/Ann_0002.jpg"])
    (tmp_path / "pairs.txt").write_text("1\t2\nAnn\t1\t2\nAnn\t1\t2\n")
    with pytest.raises(ProtocolError, match=r"pairs\.txt:1: header announces"):
        load_lfw_pairs(tmp_path / "pairs.txt")
    (tmp_path / "pairs.txt").write_text("1\t1\nAnn\t1\t2\nAnn\t1\n")
    with pytest.raises(ProtocolError, match=r"pairs\.txt:3: expected 'name n1 n2'"):
        load_lfw_pairs(tmp_path / "pairs.txt")


def test_csv_pairs_relative_to_csv_folder_with_header_and_balanced_folds(tmp_path: Path):
    _touch_images(tmp_path, [f"img/{i}.png" for i in range(8)])
    lines = ["path1,path2,label"] + [f"img/{i}.png,img/{(i + 1) % 8}.png,{i % 2}" for i in range(8)]
    (tmp_path / "pairs.csv").write_text("\n".join(lines) + "\n")
    protocol = load_pairs_file(tmp_path / "pairs.csv")
    assert protocol.name == "pairs"
    assert protocol.images[0] == tmp_path / "img" / "0.png"
    assert len(protocol.pairs) == 8
    assert protocol.num_folds == 4  # 4 same pairs: at most 4 folds that each hold both classes
    for fold in range(4):
        assert sorted(protocol.labels[protocol.folds == fold]) == [False, True]


def test_csv_errors_name_the_line(tmp_path: Path):
    _touch_images(tmp_path, ["a.jpg", "b.jpg"])
    (tmp_path / "pairs.csv").write_text("a.jpg,b.jpg,1\na.jpg,b.jpg,maybe\n")
    with pytest.raises(ProtocolError, match=r"pairs\.csv:2: label must be"):
        load_csv_pairs(tmp_path / "pairs.csv")
    (tmp_path / "pairs.csv").write_text("a.jpg,missing.jpg,1\na.jpg,b.jpg,0\n" * 2)
    with pytest.raises(ProtocolError, match="not found.*missing.jpg"):
        load_csv_pairs(tmp_path / "pairs.csv")


def test_balanced_folds_are_contiguous_per_class():
    labels = np.array([True] * 6 + [False] * 4)
    np.testing.assert_array_equal(balanced_folds(labels, 2), [0, 0, 0, 1, 1, 1, 0, 0, 1, 1])
    with pytest.raises(ProtocolError):
        balanced_folds(np.array([True, False, False]))
