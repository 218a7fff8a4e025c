"""jobs.spec: the issue's example is accepted as written; every bad spec names its path."""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobs.errors import DataError, SpecError
from jobs.spec import (
    ComponentSpec,
    JobSpec,
    SchedulerSpec,
    check_components,
    json_schema,
    load_spec,
)

# The example in issue 5, exactly as written there.
DIGITS_MLP: dict[str, Any] = {
    "name": "digits-mlp",
    "model": {
        "layers": [
            {"type": "Linear", "in_features": 64, "out_features": 128},
            {"type": "ReLU"},
            {"type": "Dropout", "p": 0.1},
            {"type": "Linear", "in_features": 128, "out_features": 10},
        ]
    },
    "data": {
        "train": "builtin:digits",
        "validation_split": 0.2,
        "batch_size": 64,
        "shuffle": True,
    },
    "loss": {"type": "CrossEntropyLoss"},
    "optimizer": {"type": "AdamW", "lr": 0.003, "weight_decay": 0.01},
    "scheduler": {"type": "WarmupCosineLR", "warmup_steps": 20},
    "training": {
        "epochs": 15,
        "precision": "fp32",
        "eval_every_steps": 50,
        "checkpoint_every_steps": 100,
        "seed": 0,
    },
}


def spec_with(change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    spec = copy.deepcopy(DIGITS_MLP)
    change(spec)
    return spec


def test_issue_example_is_accepted_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "digits-mlp.json"
    path.write_text(json.dumps(DIGITS_MLP))
    spec = load_spec(path)
    assert spec == load_spec(str(path)) == load_spec(DIGITS_MLP)
    check_components(spec)
    assert spec.version == 1 and spec.priority == 5
    assert spec.model.layers is not None and spec.model.layers[2].kwargs == {"p": 0.1}
    assert spec.optimizer.kwargs == {"lr": 0.003, "weight_decay": 0.01}
    assert isinstance(spec.scheduler, SchedulerSpec)
    assert spec.scheduler.kwargs == {"warmup_steps": 20}
    assert spec.scheduler.interval == "step"
    assert spec.data.workers == 0 and spec.data.tokenizer == "char"
    assert spec.training.max_steps is None and spec.training.keep_checkpoints == 3
    assert spec.resources.device == "auto" and spec.resources.gpus == 0


def test_round_trips_through_json() -> None:
    spec = load_spec(DIGITS_MLP)
    assert load_spec(json.loads(spec.model_dump_json(exclude_none=True))) == spec


@pytest.mark.parametrize(
    ("change", "path", "reason"),
    [
        (lambda s: s["training"].update(max_steps=100), "training.max_steps", "not both"),
        (lambda s: s["training"].pop("epochs"), "training.epochs", "one of epochs and max_steps"),
        (lambda s: s.update(resources={"gpus": 2}), "resources.gpus", "data-parallel"),
        (lambda s: s.update(resources={"processes": 4}), "resources.processes", "data-parallel"),
        (lambda s: s["training"].update(precision="fp8"), "training.precision", "'bf16'"),
        (lambda s: s.update(extra=1), "extra", "Extra inputs are not permitted"),
        (lambda s: s["data"].update(batchsize=8), "data.batchsize", "Extra inputs"),
        (lambda s: s["training"].update(epoch=3), "training.epoch", "Extra inputs"),
        (lambda s: s["model"]["layers"][2].pop("type"), "model.layers[2].type", "Field required"),
        (lambda s: s.update(priority=10), "priority", "less than or equal to 9"),
        (lambda s: s["data"].update(validation_split=1.0), "data.validation_split", "less than 1"),
        (lambda s: s["data"].update(batch_size=0), "data.batch_size", "greater than 0"),
        (lambda s: s["scheduler"].update(interval="batch"), "scheduler.interval", "'epoch'"),
        (lambda s: s.pop("loss"), "loss", "Field required"),
        (lambda s: s.update(version=2), "version", "1"),
        (
            lambda s: s["training"].update(early_stopping={"mode": "min"}),
            "training.early_stopping.patience",
            "Field required",
        ),
        (
            lambda s: s["model"].update(architecture="mlp"),
            "model.layers",
            "exactly one of layers and architecture",
        ),
        (lambda s: s.update(model={}), "model.architecture", "exactly one"),
        (lambda s: s["model"].update(args={"hidden": [8]}), "model.args", "layers take none"),
        (
            lambda s: s.update(model={"architecture": "mlp", "args": {"hidden": [8, "x"]}}),
            "model.args.hidden[1]",
            "valid integer",
        ),
        (
            lambda s: s.update(model={"architecture": "cnn", "args": {"chanels": [8]}}),
            "model.args.chanels",
            "Extra inputs",
        ),
        (
            lambda s: s.update(model={"architecture": "transformer_lm", "args": {"n_heads": 3}}),
            "model.args.n_heads",
            "must divide d_model (128)",
        ),
        (
            lambda s: s.update(model={"architecture": "vgg"}),
            "model.architecture",
            "'transformer_lm'",
        ),
        (
            lambda s: s["model"]["layers"].append({"type": "Sequential"}),
            "model.layers[4].layers",
            "needs its list of layers",
        ),
        (
            lambda s: s["model"]["layers"][0].update(layers=[]),
            "model.layers[0].layers",
            "only Sequential takes layers",
        ),
        # a model deeper than any spec needs: the API would build modules for minutes
        (
            lambda s: s.update(
                model={"architecture": "transformer_lm", "args": {"n_layers": 2**31}}
            ),
            "model.args.n_layers",
            "less than or equal to 1000",
        ),
        (
            lambda s: s["model"]["layers"].extend(
                [{"type": "Sequential", "layers": [{"type": "ReLU"}] * 600}] * 2
            ),
            "model.layers",
            "at most 1000 layers in all",
        ),
    ],
)
def test_bad_spec_names_its_path(
    change: Callable[[dict[str, Any]], Any], path: str, reason: str
) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(spec_with(change))
    assert info.value.path == path
    assert reason in info.value.reason
    assert str(info.value) == f"{path}: {info.value.reason}"


@pytest.mark.parametrize(
    ("change", "path", "reason"),
    [
        (
            lambda s: s["optimizer"].update(betaz=[0.9, 0.99]),
            "optimizer.betaz",
            "unexpected argument for AdamW",
        ),
        (lambda s: s["optimizer"].update(params=[]), "optimizer.params", "unexpected argument"),
        (
            lambda s: s["optimizer"].update(type="Adamm"),
            "optimizer.type",
            "unknown optimizer 'Adamm'",
        ),
        (lambda s: s["optimizer"].update(lr=-1.0), "optimizer", "Invalid learning rate"),
        (lambda s: s["loss"].update(type="Linear"), "loss.type", "unknown loss 'Linear'"),
        (
            lambda s: s["loss"].update(smoothing=0.1),
            "loss.smoothing",
            "unexpected argument for CrossEntropyLoss",
        ),
        (
            lambda s: s["scheduler"].update(type="StepLR"),
            "scheduler.warmup_steps",
            "unexpected argument for StepLR",
        ),
        (
            lambda s: s.update(scheduler={"type": "StepLR"}),
            "scheduler.step_size",
            "required argument of StepLR",
        ),
        (lambda s: s.update(scheduler={"type": "LambdaLR"}), "scheduler.type", "unknown scheduler"),
    ],
)
def test_bad_component_names_its_path(
    change: Callable[[dict[str, Any]], Any], path: str, reason: str
) -> None:
    spec = load_spec(spec_with(change))
    with pytest.raises(SpecError) as info:
        check_components(spec)
    assert (info.value.path, reason in info.value.reason) == (path, True), info.value


def test_scheduler_length_is_left_to_the_loop() -> None:
    # total_steps / T_max come from the run's optimizer steps when the spec leaves them out
    for scheduler in ({"type": "WarmupCosineLR", "warmup_steps": 5}, {"type": "CosineAnnealingLR"}):
        check_components(load_spec(spec_with(lambda s, sc=scheduler: s.update(scheduler=sc))))


def test_component_keeps_extra_arguments() -> None:
    c = ComponentSpec.model_validate({"type": "SGD", "lr": 0.1, "momentum": 0.9})
    assert c.type == "SGD" and c.kwargs == {"lr": 0.1, "momentum": 0.9}


def test_architecture_args_get_their_defaults() -> None:
    spec = load_spec(spec_with(lambda s: s.update(model={"architecture": "transformer_lm"})))
    assert spec.model.args == {
        "d_model": 128,
        "n_heads": 4,
        "n_layers": 2,
        "d_ff": None,
        "dropout": 0.1,
    }


def test_unreadable_sources_are_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"^\$: cannot read .*missing.json"):
        load_spec(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": ')
    with pytest.raises(SpecError, match=r"^\$: .*bad.json is not valid JSON: .* line 1"):
        load_spec(bad)
    with pytest.raises(SpecError) as info:
        load_spec({"name": "x"} | {"model": []})
    assert info.value.path == "model"


def test_json_schema_export() -> None:
    schema = json_schema()
    assert schema == JobSpec.model_json_schema()
    json.dumps(schema)  # serialisable as is
    assert set(schema["required"]) == {"name", "model", "data", "loss", "optimizer", "training"}
    assert schema["additionalProperties"] is False
    defs = schema["$defs"]
    assert defs["TrainingSpec"]["properties"]["precision"]["enum"] == ["fp32", "fp16", "bf16"]
    assert defs["ComponentSpec"]["additionalProperties"] is True
    assert set(defs["ModelSpec"]["properties"]["architecture"]["anyOf"][0]["enum"]) == {
        "mlp",
        "cnn",
        "resnet",
        "transformer_lm",
    }


def test_errors_keep_their_fields_through_pickle() -> None:
    # worker processes hand exceptions back pickled
    e = pickle.loads(pickle.dumps(SpecError("training.epochs", "must be positive")))
    assert (e.path, e.reason, str(e)) == (
        "training.epochs",
        "must be positive",
        "training.epochs: must be positive",
    )
    d = pickle.loads(pickle.dumps(DataError("x.csv", "NaN in row 3")))
    assert (d.source, d.reason, str(d)) == ("x.csv", "NaN in row 3", "x.csv: NaN in row 3")
    assert isinstance(e, ValueError) and isinstance(d, ValueError)
