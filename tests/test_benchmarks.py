"""The benchmarks measure what the README reports (DRConv shapes, end to end); the soak run reports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


def test_bench_drconv_covers_the_default_backbones_drconv_shapes(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    import bench_drconv

    default = bench_drconv.default_drconv_shapes()
    listed = {(s.in_channels, s.out_channels, s.size) for s in bench_drconv.SHAPES}
    assert default == {(128, 64, 28)}  # the five stage-1 projections (BackboneConfig defaults)
    assert default <= listed


@pytest.mark.slow
def test_bench_drconv_quick_runs_and_marks_the_default_shape():
    result = subprocess.run(
        [sys.executable, "benchmarks/bench_drconv.py", "--quick", "--batches", "1"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("stage1.project*")]
    assert len(rows) == 1 and rows[0].split()[1] == "128->64"


@pytest.mark.slow
@pytest.mark.data
def test_soak_run_reports_answers_memory_logs_and_readiness(data_root, tmp_path):
    # A few seconds only: that the script runs and reports; docs/soak.md holds a real run.
    result = subprocess.run(
        [sys.executable, "benchmarks/soak.py", "--seconds", "4", "--data-root", str(data_root)]
        + ["--log", str(tmp_path / "server.log"), "--out", str(tmp_path / "soak.md")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "soak.md").read_text()
    for row in ("answers", "valid requests, latency", "server RSS", "server log", "`/readyz`"):
        assert f"| {row} |" in report
    assert "**5xx 0**" in report


@pytest.mark.slow
def test_bench_backends_quick_reports_every_backend_with_ratios(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    import bench_backends

    assert bench_backends.main(["--quick"]) == 0
    printed = capsys.readouterr().out
    for title in ("embed_faces at batch 1", "embed_faces at batch 4", "region maps of one face"):
        assert title in printed
    rows = [line.split() for line in printed.splitlines() if line.strip().startswith("onnxruntime")]
    assert len(rows) == 3 and all(row[-1].endswith("x") for row in rows)


def test_bench_identify_prints_one_row_per_gallery_size():
    result = subprocess.run(
        [sys.executable, "benchmarks/bench_identify.py", "--sizes", "1000", "3000", "--queries", "3"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = [
        line
        for line in result.stdout.splitlines()
        if line.startswith("| 1,000 |") or line.startswith("| 3,000 |")
    ]
    assert len(rows) == 2
