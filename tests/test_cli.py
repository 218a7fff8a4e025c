"""The `descent` CLI through Typer's runner: validate, train, predict; user errors give a
message and exit code 1, never a traceback."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from descent.cli import app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
runner = CliRunner()


def write_spec(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / f"{doc.get('name', 'spec')}.json"
    path.write_text(json.dumps(doc))
    return path


def tiny_digits() -> dict[str, Any]:
    doc = json.loads((EXAMPLES / "digits-mlp.json").read_text())
    doc["training"] = {"max_steps": 30, "eval_every_steps": 15, "checkpoint_every_steps": 15}
    return doc


def test_validate_reports_parameters_and_memory() -> None:
    result = runner.invoke(app, ["validate", str(EXAMPLES / "digits-mlp.json")])
    assert result.exit_code == 0, result.output
    assert "parameters: 9,610" in result.output
    assert "estimated memory:" in result.output


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["model"]["layers"][0].update(in_features=63), "model.layers"),
        (lambda d: d["data"].update(train="builtin:nope"), "builtin:nope"),
        (lambda d: d["optimizer"].update(type="Adamm"), "optimizer"),
    ],
    ids=["shape", "data", "component"],
)
def test_validate_failures_exit_1_with_the_message(
    tmp_path: Path, change: Any, message: str
) -> None:
    doc = tiny_digits()
    change(doc)
    result = runner.invoke(app, ["validate", str(write_spec(tmp_path, doc))])
    assert result.exit_code == 1
    assert message in result.output
    assert isinstance(result.exception, SystemExit)  # an exit, not an escaped exception


def test_a_missing_spec_file_is_a_user_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(tmp_path / "none.json")])
    assert result.exit_code == 1
    assert "cannot read" in result.output


def test_train_then_predict(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, tiny_digits())
    data_dir = tmp_path / "data"
    result = runner.invoke(app, ["train", str(spec), "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    model = data_dir / "jobs" / "digits-mlp" / "model.safetensors"
    assert f"model: {model}" in result.output
    assert "val_accuracy" in result.output

    again = runner.invoke(app, ["train", str(spec), "--data-dir", str(data_dir)])
    assert "resumed from step 30" in again.output

    with gzip.open(Path(__file__).resolve().parents[1] / "jobs/data/digits.csv.gz", "rt") as f:
        table = np.loadtxt(f, delimiter=",")[:20]
    np.savez(tmp_path / "x.npz", x=table[:, :64])
    predicted = runner.invoke(app, ["predict", str(model.parent), str(tmp_path / "x.npz")])
    assert predicted.exit_code == 0, predicted.output
    labels = [int(line) for line in predicted.output.split()]
    assert np.mean(np.array(labels) == table[:, 64]) >= 0.7


def test_predict_generates_text_from_a_prompt(tmp_path: Path) -> None:
    doc = json.loads((EXAMPLES / "char-lm.json").read_text())
    doc["model"]["args"] = {"d_model": 16, "n_heads": 2, "n_layers": 1}
    doc["data"]["context"] = 16
    doc["scheduler"] = None
    doc["training"] = {"max_steps": 3}
    data_dir = tmp_path / "data"
    trained = runner.invoke(
        app, ["train", str(write_spec(tmp_path, doc)), "--data-dir", str(data_dir)]
    )
    assert trained.exit_code == 0, trained.output
    result = runner.invoke(app, ["predict", str(data_dir / "jobs" / "char-lm"), "def "])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("def ") and len(result.output) > 100


def test_predict_on_a_missing_model_is_a_user_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["predict", str(tmp_path / "nope"), "x.npz"])
    assert result.exit_code == 1
    assert "no such model" in result.output


def test_validate_refuses_a_run_over_its_memory_or_parameter_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = json.loads((EXAMPLES / "digits-mlp.json").read_text())
    layers = spec["model"]["layers"]
    layers[0]["out_features"] = layers[-1]["in_features"] = 2048  # ~150k parameters, ~2.5 MB
    spec["resources"] = {"memory_limit_mb": 1}
    path = tmp_path / "tight.json"
    path.write_text(json.dumps(spec))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert "resources.memory_limit_mb" in result.output and "limit of 1 MB" in result.output
    monkeypatch.setenv("DESCENT_MAX_PARAMETERS", "1000")
    result = runner.invoke(app, ["validate", str(EXAMPLES / "digits-mlp.json")])
    assert result.exit_code == 1 and "DESCENT_MAX_PARAMETERS" in result.output


def test_train_refuses_a_model_that_does_not_fit_the_data_before_any_step(tmp_path: Path) -> None:
    spec = json.loads((EXAMPLES / "digits-mlp.json").read_text())
    spec["model"]["layers"][-1]["in_features"] = 64  # the previous layer gives 128
    path = tmp_path / "misfit.json"
    path.write_text(json.dumps(spec))
    result = runner.invoke(app, ["train", str(path), "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 1
    assert "model.layers[3]" in result.output and "128" in result.output
    assert not (tmp_path / "data" / "jobs" / "digits-mlp" / "checkpoints").exists() or not any(
        (tmp_path / "data" / "jobs" / "digits-mlp" / "checkpoints").iterdir()
    )
