"""`drface export`: writes a checked file; user mistakes end with one line on stderr and exit 2."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from app.cli import main
from model.artifact import save_artifact


@pytest.fixture
def tiny_weights(tiny_loaded, tmp_path: Path) -> Path:
    save_artifact(tmp_path / "tiny", tiny_loaded.model, tiny_loaded.card)
    return tmp_path / "tiny.safetensors"


@pytest.fixture
def faces_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "faces"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))
    return folder


def test_export_writes_a_checked_onnx_file_and_reports_it(tiny_weights, faces_dir, tmp_path, capsys):
    out = tmp_path / "out" / "tiny.onnx"
    argv = ["export", "--weights", str(tiny_weights), "--out", str(out), "--region-maps"]
    code = main([*argv, "--batch", "dynamic", "--check-faces", str(faces_dir)])
    printed = capsys.readouterr().out
    assert code == 0
    onnx.checker.check_model(str(out), full_check=True)
    assert "region_map.stage1.0.project (batch, 28, 28)" in printed
    assert "2 aligned faces + 8 synthetic inputs" in printed and "check passed" in printed


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--weights", "missing.safetensors"], "weights file not found"),
        (["--out", "model.txt"], "must name an .onnx file"),
        (["--check-faces", "no-such-folder"], "check faces folder not found"),
    ],
)
def test_user_mistakes_exit_2_with_one_line_and_no_traceback(
    tiny_weights, tmp_path, capsys, arguments, message
):
    argv = ["export", "--weights", str(tiny_weights), "--out", str(tmp_path / "m.onnx"), *arguments]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize(
    "arguments", [["--batch", "0"], ["--batch", "many"], ["--opset", "9"], ["--format", "tf"]]
)
def test_bad_option_values_are_usage_errors(arguments, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", *arguments])
    assert exit_info.value.code == 2
    assert "drface export: error: argument" in capsys.readouterr().err
