"""The job spec: what a user sends us, as versioned JSON validated by pydantic v2.

A spec names the model (a list of `engine.nn` layers or a named architecture), the data,
the loss, optimizer and scheduler (engine classes by name, with their constructor
arguments), the training loop's settings and the resources. `load_spec` turns JSON into a
`JobSpec` or raises one `SpecError` whose path says where the spec is wrong
("training.epochs", "model.layers[2].type"); `check_components` checks the loss,
optimizer and scheduler against the engine's classes. Model shapes are checked later,
against the data set, by `jobs.models.build_model` and `dry_run`.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

import engine
import engine.nn
import engine.optim
import engine.optim.lr_scheduler
from jobs.errors import SpecError

# The spec's root in error paths: errors about the document as a whole.
ROOT = "$"
# Scheduler arguments the loop fills from the run's optimizer steps when left out.
FILLED_SCHEDULER_ARGS = ("total_steps", "T_max")
ARCHITECTURES = ("mlp", "cnn", "resnet", "transformer_lm")


def _error_at(at: str, reason: str) -> PydanticCustomError:
    """A validation error below the current model: `load_spec` appends `at` to its path."""
    return PydanticCustomError("spec", "{reason}", {"reason": reason, "at": at})


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or ROOT


class _Section(BaseModel):
    # a misspelt key is an error, never silently a default
    model_config = ConfigDict(extra="forbid")


class ComponentSpec(BaseModel):
    """An engine class by name plus its constructor's keyword arguments, kept as given."""

    model_config = ConfigDict(extra="allow")

    type: str

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class SchedulerSpec(ComponentSpec):
    interval: Literal["step", "epoch"] = "step"


# The deepest model a spec may describe, in layers or blocks (GPT-3 has 96): a spec asking
# for 2**31 blocks would otherwise keep the API building modules until its memory runs out.
MAX_DEPTH = 1000


class LayerSpec(BaseModel):
    """One `engine.nn` layer: {"type": "Linear", "in_features": 64, ...}; a nested
    `Sequential` is {"type": "Sequential", "layers": [...]}."""

    model_config = ConfigDict(extra="allow")

    type: str
    layers: list[LayerSpec] | None = Field(None, max_length=MAX_DEPTH)

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _layers_only_for_sequential(self) -> LayerSpec:
        if self.type == "Sequential" and self.layers is None:
            raise _error_at("layers", "a Sequential needs its list of layers")
        if self.type != "Sequential" and self.layers is not None:
            raise _error_at("layers", f"only Sequential takes layers, not {self.type}")
        if self.type == "Sequential" and self.kwargs:
            raise _error_at(next(iter(self.kwargs)), "unexpected argument for Sequential")
        return self


def _all_positive(sizes: list[int], what: str) -> list[int]:
    if any(n <= 0 for n in sizes):
        raise ValueError(f"every {what} must be positive")
    return sizes


class MLPArgs(_Section):
    hidden: list[int] = Field(default_factory=lambda: [128, 128], max_length=MAX_DEPTH)
    dropout: float = Field(0.0, ge=0, lt=1)
    activation: Literal["relu", "gelu"] = "relu"

    @field_validator("hidden")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        return _all_positive(v, "hidden width")


class CNNArgs(_Section):
    channels: list[int] = Field(
        default_factory=lambda: [32, 64], min_length=1, max_length=MAX_DEPTH
    )
    dropout: float = Field(0.0, ge=0, lt=1)

    @field_validator("channels")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        return _all_positive(v, "channel count")


class ResNetArgs(_Section):
    # one stage per entry; every stage after the first halves the map (stride 2)
    channels: list[int] = Field(
        default_factory=lambda: [16, 32, 64], min_length=1, max_length=MAX_DEPTH
    )
    blocks_per_stage: int = Field(1, ge=1, le=MAX_DEPTH)

    @field_validator("channels")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        return _all_positive(v, "channel count")


class TransformerLMArgs(_Section):
    d_model: int = Field(128, gt=0)
    n_heads: int = Field(4, gt=0)
    n_layers: int = Field(2, ge=1, le=MAX_DEPTH)
    d_ff: int | None = Field(None, gt=0, description="feed-forward width; 4 * d_model if null")
    dropout: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _heads_divide(self) -> TransformerLMArgs:
        if self.d_model % self.n_heads:
            raise _error_at("n_heads", f"must divide d_model ({self.d_model})")
        return self


ARCHITECTURE_ARGS: dict[str, type[BaseModel]] = {
    "mlp": MLPArgs,
    "cnn": CNNArgs,
    "resnet": ResNetArgs,
    "transformer_lm": TransformerLMArgs,
}


def _count_layers(layers: list[LayerSpec]) -> int:
    return sum(1 + _count_layers(layer.layers or []) for layer in layers)


class ModelSpec(_Section):
    """Exactly one of `layers` (engine.nn layers in order) or `architecture` with `args`."""

    layers: list[LayerSpec] | None = Field(None, min_length=1, max_length=MAX_DEPTH)
    architecture: Literal["mlp", "cnn", "resnet", "transformer_lm"] | None = None
    args: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_kind(self) -> ModelSpec:
        if (self.layers is None) == (self.architecture is None):
            raise _error_at(
                "layers" if self.layers is not None else "architecture",
                "give exactly one of layers and architecture",
            )
        if self.architecture is None:
            if self.args:
                raise _error_at("args", "args belong to an architecture; layers take none")
            if _count_layers(self.layers or []) > MAX_DEPTH:
                raise _error_at("layers", f"at most {MAX_DEPTH} layers in all, nested included")
            return self
        try:
            typed = ARCHITECTURE_ARGS[self.architecture].model_validate(self.args)
        except ValidationError as e:
            raise _nested_error("args", e) from None
        # defaults filled in, so the spec saved with a model says exactly what was built
        self.args = typed.model_dump()
        return self

    def architecture_args(self) -> Any:
        """The architecture's arguments as their typed model (MLPArgs, CNNArgs, ...)."""
        assert self.architecture is not None, "a layers model has no architecture args"
        return ARCHITECTURE_ARGS[self.architecture].model_validate(self.args)


class DataSpec(_Section):
    train: str = Field(description='a file path, "builtin:NAME" or a data-set id')
    validation: str | None = None
    validation_split: float = Field(0.1, ge=0, lt=1)
    batch_size: int = Field(32, gt=0)
    shuffle: bool = True
    workers: int = Field(0, ge=0)
    label_column: str | None = Field(None, description="CSV: the column holding the label")
    tokenizer: Literal["char", "byte"] = "char"
    context: int = Field(128, gt=0, description="language models: tokens per window")
    standardize: bool = True


class EarlyStopping(_Section):
    metric: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    patience: int = Field(ge=1, description="evaluations without improvement before stopping")
    min_delta: float = Field(0.0, ge=0)


class TrainingSpec(_Section):
    epochs: int | None = Field(None, gt=0)
    max_steps: int | None = Field(None, gt=0)
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    grad_clip_norm: float | None = Field(None, gt=0)
    grad_accumulation_steps: int = Field(1, ge=1)
    eval_every_steps: int | None = Field(None, gt=0)
    checkpoint_every_steps: int | None = Field(None, gt=0)
    keep_checkpoints: int = Field(3, ge=1, description="newest N, plus the best")
    seed: int = 0
    early_stopping: EarlyStopping | None = None
    gradient_checkpointing: bool = False

    @model_validator(mode="after")
    def _one_length(self) -> TrainingSpec:
        if self.epochs is not None and self.max_steps is not None:
            raise _error_at("max_steps", "give exactly one of epochs and max_steps, not both")
        if self.epochs is None and self.max_steps is None:
            raise _error_at("epochs", "give one of epochs and max_steps")
        return self


_NO_DATA_PARALLEL = "data-parallel training is not available yet; use at most 1"


class ResourcesSpec(_Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    gpus: int = Field(0, ge=0)
    processes: int = Field(1, ge=1, description="data-parallel ranks on CPU")
    memory_limit_mb: int | None = Field(None, gt=0)

    @field_validator("gpus", "processes")
    @classmethod
    def _single_rank(cls, v: int) -> int:
        if v > 1:
            raise ValueError(_NO_DATA_PARALLEL)
        return v


class JobSpec(_Section):
    version: Literal[1] = 1
    name: str = Field(min_length=1)
    model: ModelSpec
    data: DataSpec
    loss: ComponentSpec
    optimizer: ComponentSpec
    scheduler: SchedulerSpec | None = None
    training: TrainingSpec
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    priority: int = Field(5, ge=0, le=9)


def _first_error(e: ValidationError, prefix: tuple[int | str, ...] = ()) -> tuple[str, str]:
    err = e.errors(include_url=False)[0]
    loc = prefix + tuple(err["loc"])
    ctx = err.get("ctx") or {}
    if "at" in ctx:
        loc += (ctx["at"],)
    msg = err["msg"]
    # pydantic prefixes a ValueError's message with "Value error, ": noise for users
    return _path(loc), msg.removeprefix("Value error, ")


def _nested_error(at: str, e: ValidationError) -> PydanticCustomError:
    path, reason = _first_error(e, (at,))
    return _error_at(path, reason)


def load_spec(source: str | Path | dict[str, Any]) -> JobSpec:
    """A validated JobSpec from a JSON file's path or an already parsed dict.

    Raises SpecError naming the first problem's JSON path, or ROOT ("$") when the file
    cannot be read or is not JSON.
    """
    if isinstance(source, dict):
        raw: Any = source
    else:
        try:
            raw = json.loads(Path(source).read_text(encoding="utf-8"))
        except OSError as e:
            raise SpecError(ROOT, f"cannot read {source}: {e.strerror or e}") from None
        except UnicodeDecodeError as e:
            raise SpecError(ROOT, f"{source} is not UTF-8 text: {e.reason}") from None
        except json.JSONDecodeError as e:
            raise SpecError(
                ROOT, f"{source} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"
            ) from None
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(*_first_error(e)) from None


def json_schema() -> dict[str, Any]:
    """The JobSpec's JSON Schema, for editors and the service's API docs."""
    return JobSpec.model_json_schema()


def _classes(module: Any, base: type, exclude: tuple[type, ...] = ()) -> dict[str, type]:
    return {
        name: obj
        for name, obj in vars(module).items()
        if isinstance(obj, type)
        and issubclass(obj, base)
        and obj is not base
        and obj not in exclude
        and not name.startswith("_")
    }


def loss_classes() -> dict[str, type]:
    return {
        name: cls
        for name, cls in _classes(engine.nn, engine.nn.Module).items()
        if name.endswith("Loss")
    }


def optimizer_classes() -> dict[str, type]:
    return _classes(engine.optim, engine.optim.Optimizer)


def scheduler_classes() -> dict[str, type]:
    sched = engine.optim.lr_scheduler
    # LambdaLR and SequentialLR take Python callables and scheduler objects: not JSON
    return _classes(sched, sched.LRScheduler, exclude=(sched.LambdaLR, sched.SequentialLR))


@functools.cache
def constructor_parameters(cls: type) -> Mapping[str, inspect.Parameter]:
    """The parameters of `cls`'s constructor, looked up once a class: every POST /jobs
    checks a spec's components and layers against them."""
    return inspect.signature(cls).parameters


def _check_args(
    section: str, cls: type, kwargs: dict[str, Any], *, skip_first: bool, filled: tuple[str, ...]
) -> None:
    params = list(constructor_parameters(cls).values())
    if skip_first:
        # the params / optimizer argument is the loop's to pass, never the spec's
        params = params[1:]
    named = {p.name: p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    for key in kwargs:
        if key not in named and not takes_any:
            raise SpecError(f"{section}.{key}", f"unexpected argument for {cls.__name__}")
    for name, p in named.items():
        if p.default is p.empty and name not in kwargs and name not in filled:
            raise SpecError(f"{section}.{name}", f"required argument of {cls.__name__}")


def check_components(spec: JobSpec) -> None:
    """Checks that loss, optimizer and scheduler name engine classes whose constructors take
    the given arguments; the optimizer is also built on a dummy parameter, so that a bad
    value (a negative lr) is found now. Raises SpecError ("optimizer.betaz: unexpected
    argument for AdamW")."""
    sections: list[tuple[str, ComponentSpec, dict[str, type], bool, tuple[str, ...]]] = [
        ("loss", spec.loss, loss_classes(), False, ()),
        ("optimizer", spec.optimizer, optimizer_classes(), True, ()),
    ]
    if spec.scheduler is not None:
        sections.append(
            ("scheduler", spec.scheduler, scheduler_classes(), True, FILLED_SCHEDULER_ARGS)
        )
    for section, component, known, skip_first, filled in sections:
        cls = known.get(component.type)
        if cls is None:
            raise SpecError(
                f"{section}.type",
                f"unknown {section} {component.type!r}; one of {', '.join(sorted(known))}",
            )
        _check_args(section, cls, component.kwargs, skip_first=skip_first, filled=filled)
    try:
        dummy = engine.nn.Parameter(engine.zeros(1))
        optimizer_classes()[spec.optimizer.type]([dummy], **spec.optimizer.kwargs)
    except (TypeError, ValueError) as e:
        raise SpecError("optimizer", f"{spec.optimizer.type}: {e}") from None
