"""TrainConfig: the shipped recipe validates, every field is documented, bad fields are named."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from pydantic import BaseModel

from training.config import (
    DEFAULT_CONFIG_PATH,
    ConfigError,
    TrainConfig,
    config_to_yaml,
    load_config,
    parse_set_items,
    read_yaml,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _walk(model: type[BaseModel], prefix: str = ""):
    for name, field in model.model_fields.items():
        yield prefix + name, field
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _walk(annotation, f"{prefix}{name}.")


def test_every_field_is_documented():
    undocumented = [name for name, field in _walk(TrainConfig) if not field.description]
    sections = {
        name: field.annotation
        for name, field in _walk(TrainConfig)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    }
    assert undocumented == list(sections)  # sections are documented by their class docstring
    assert all(section.__doc__ for section in sections.values())


def test_shipped_recipe_validates_with_data_given(tmp_path):
    config = load_config(None, {"data.roots": [str(tmp_path)]})
    assert config.data.roots == [tmp_path]
    assert config.model.drconv is True
    # the recipe sets every field explicitly, so the YAML documents the whole recipe
    written = read_yaml(DEFAULT_CONFIG_PATH)
    for name, _ in _walk(TrainConfig):
        node = written
        for part in name.split("."):
            assert part in node, f"configs/default.yaml does not set {name}"
            node = node[part]


def test_round_trip_through_yaml(tmp_path):
    config = load_config(None, {"data.roots": [str(tmp_path)], "head.scale": 30.0})
    path = tmp_path / "config.yaml"
    path.write_text(config_to_yaml(config))
    assert load_config(path) == config


def test_without_data_the_error_names_data_roots():
    with pytest.raises(ConfigError, match=r"data\.roots"):
        load_config(None, {})


def test_unknown_and_invalid_fields_are_named(tmp_path):
    overrides = {"data.roots": [str(tmp_path)], "optim.lrr": 0.1, "head.scale": -1, "epochs": "many"}
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    message = str(info.value)
    assert "optim.lrr: unknown field" in message
    assert "head.scale" in message
    assert "epochs" in message


def test_set_items_parse_yaml_values():
    assert parse_set_items(["optim.lr=0.05", "eval.cfp_tasks=[cfp_fp]", "eval.cfp_root=null"]) == {
        "optim.lr": 0.05,
        "eval.cfp_tasks": ["cfp_fp"],
        "eval.cfp_root": None,
    }
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set_items(["optim.lr"])


def test_cli_rejects_a_bad_config_before_any_work(tmp_path):
    out = tmp_path / "run"
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  name: sgd\n  momentun: 0.9\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "train",
            "--config",
            str(bad),
            "--data",
            str(tmp_path),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert result.returncode == 2
    assert "optim.momentun: unknown field" in result.stderr
    assert not out.exists()


def _has_build_backend() -> bool:
    """setuptools new enough for pyproject.toml's build-system (the test builds without network)."""
    try:
        import setuptools
    except ImportError:
        return False
    return int(setuptools.__version__.split(".")[0]) >= 68


@pytest.mark.slow
@pytest.mark.skipif(not _has_build_backend(), reason="needs setuptools>=68 to build the wheel offline")
def test_default_recipe_travels_with_a_non_editable_install(tmp_path):
    """A wheel of the project, unpacked outside the checkout, finds the same recipe without --config."""
    source = tmp_path / "source"  # what the Dockerfile copies; building here keeps the checkout clean
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    for name in ("app", "model", "training", "configs"):
        shutil.copytree(REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "_ext"))
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--wheel-dir", str(wheels), str(source)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    site = tmp_path / "site"
    with zipfile.ZipFile(next(wheels.glob("drface-*.whl"))) as wheel:
        wheel.extractall(site)  # a pure-Python wheel unpacked is an installed package
    probe = (
        "import training.config as c; "
        "config = c.load_config(None, {'data.roots': ['photos']}); "
        "print(c.__file__); print(c.DEFAULT_CONFIG_PATH); print(config.name)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    module_file, recipe_path, name = result.stdout.splitlines()
    assert Path(module_file).is_relative_to(site)
    assert Path(recipe_path) == site / "training" / "recipes" / "default.yaml"
    assert Path(recipe_path).read_bytes() == DEFAULT_CONFIG_PATH.read_bytes()
    assert name == load_config(None, {"data.roots": ["photos"]}).name


def test_source_checkout_reads_the_repository_recipe():
    assert DEFAULT_CONFIG_PATH == REPO_ROOT / "configs" / "default.yaml"


def test_a_checkpoint_from_before_a_new_field_resumes_when_the_field_keeps_its_default(tmp_path):
    from training.loop import _fixed_part

    current = load_config(None, {"data.roots": [str(tmp_path)]}).model_dump(mode="json")
    older = {**current, "data": {k: v for k, v in current["data"].items() if k != "holdout_max_fraction"}}
    assert _fixed_part(older, "data") == _fixed_part(current, "data")
    changed = {**current, "data": {**current["data"], "holdout_max_fraction": 0.5}}
    assert _fixed_part(changed, "data") != _fixed_part(current, "data")
