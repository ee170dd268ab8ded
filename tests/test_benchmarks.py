"""The benchmarks measure what the README reports (DRConv shapes, end to end); the soak run reports."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
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


def _run_benchmark(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, f"benchmarks/{script}", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "DRFACE_TORCH_THREADS": "1"},
    )


@pytest.mark.slow
@pytest.mark.data
def test_stage_breakdown_prints_every_stage_for_embed_and_verify(data_root):
    result = _run_benchmark(
        "stage_breakdown.py", "--requests", "2", "--photos", "2", "--data-root", str(data_root)
    )
    assert result.returncode == 0, result.stderr
    columns = ("`/v1/embed` wall", "`/v1/embed` CPU", "`/v1/verify` wall", "`/v1/verify` CPU")
    assert f"| ms per request (p50) | {' | '.join(columns)} |" in result.stdout
    for stage in ("decode", "detect", "align", "tensor", "network", "serialisation", "HTTP", "**total"):
        assert any(line.startswith(f"| {stage}") for line in result.stdout.splitlines()), stage


@pytest.mark.slow
@pytest.mark.data
def test_peer_compare_reports_both_libraries_and_their_ratio(data_root):
    pytest.importorskip("face_recognition", reason="the bench extra: make bench-install")
    result = _run_benchmark(
        "peer_compare.py", "--photos", "2", "--rounds", "1", "--data-root", str(data_root)
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split(" | ")[0] for line in result.stdout.splitlines() if line.startswith("| ")]
    assert "| drface" in rows and "| face_recognition (dlib)" in rows
    assert "drface / face_recognition:" in result.stdout


@pytest.mark.slow
def test_bench_flip_features_and_network_times_cover_both_embeddings(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    import bench_flip
    from drface_steps import DrfaceSteps

    steps = DrfaceSteps()
    faces = np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    plain, mirrored = bench_flip.features(steps, faces, batch_size=2)
    assert plain.shape == mirrored.shape == (3, steps.embedding_dim)
    served = steps.network(steps.tensor(list(faces)))
    summed = (plain + mirrored) / np.linalg.norm(plain + mirrored, axis=1, keepdims=True)
    np.testing.assert_allclose(summed, served, atol=1e-4)  # f(x) + f(mirror) is what the service embeds
    assert set(bench_flip.network_ms(steps, faces[0], repeats=1)) == {True, False}


@pytest.mark.slow
@pytest.mark.data
def test_bench_detect_scale_reports_every_variant_against_today(data_root):
    result = _run_benchmark("bench_detect_scale.py", "--every", "1000", "--data-root", str(data_root))
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| today") or "px |" in line]
    assert len(rows) == 4  # today + the three default sides


@pytest.mark.slow
def test_bench_network_batch_times_every_batch_size_per_face(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    import bench_network_batch
    from drface_steps import DrfaceSteps

    timed = bench_network_batch.per_face_ms(DrfaceSteps(), [1, 3], repeats=1)
    assert set(timed) == {1, 3} and all(wall > 0 and cpu >= 0 for wall, cpu in timed.values())


@pytest.mark.slow
@pytest.mark.data
def test_bench_servers_compares_the_two_backends(data_root):
    result = _run_benchmark(
        "bench_servers.py",
        "--requests",
        "2",
        "--rounds",
        "1",
        "--concurrency",
        "1",
        "--photos",
        "2",
        "--data-root",
        str(data_root),
    )
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith(("| torch |", "| onnxruntime |"))]
    assert len(rows) == 2 and all(row.count("x |") == 2 for row in rows)
    assert rows[0].endswith("| 1.00x | 1.00x |")  # the first variant is the baseline
