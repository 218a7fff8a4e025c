"""The `descent` command: train, validate and predict on this machine, with no server;
migrate the service's database; serve the API; run a worker.

User errors (a bad spec, bad data, a model that does not fit, a corrupt model file) end
with one line on stderr and exit code 1, never a traceback; the jobs package raises them
as SpecError, DataError, TrainingError and CheckpointError.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from engine.checkpoint import CheckpointError
from jobs import datasets, models, training
from jobs.callbacks import Callbacks
from jobs.errors import DataError, SpecError
from jobs.spec import check_components, load_spec
from workers.gpus import WORKER_GPUS_ENV, owned_gpus, worker_arguments

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Descent: train models described in JSON on Descent's own tensor engine.",
)
# soft wrap: a message or path stays one line that a person can copy
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
USER_ERRORS = (SpecError, DataError, training.TrainingError, CheckpointError)
GENERATED_TOKENS = 200


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a person can act on into a message and exit code 1."""
    try:
        yield
    except USER_ERRORS as e:
        err_console.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(1) from None


def _metrics_line(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))


class ProgressCallbacks(Callbacks):
    """Draws the run as a rich progress bar, with a line per evaluation and event."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = progress.add_task("train", total=None, epoch=0, loss=0.0, lr=0.0, rate=0.0)

    def on_step(self, step: int, metrics: dict[str, Any]) -> None:
        self.progress.update(
            self.task,
            completed=step,
            total=metrics["total_steps"],
            epoch=metrics["epoch"],
            loss=metrics["loss"],
            lr=metrics["lr"],
            rate=metrics["samples_per_s"],
        )

    def on_eval(self, step: int, metrics: dict[str, Any]) -> None:
        self.progress.console.print(f"step {step}: {_metrics_line(metrics)}", highlight=False)

    def on_event(self, kind: str, message: str) -> None:
        style = "yellow" if kind == "warning" else "dim"
        self.progress.console.print(f"[{style}]{message}[/{style}]", highlight=False)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epoch {task.fields[epoch]}"),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("lr {task.fields[lr]:.2e}"),
        TextColumn("{task.fields[rate]:.0f} samples/s"),
        TimeRemainingColumn(),
        console=console,
    )


SpecArg = Annotated[Path, typer.Argument(help="the job spec, a JSON file")]


@app.command()
def train(
    spec_path: SpecArg,
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="checkpoints and models go under DIR/jobs/NAME")
    ] = Path("descent-data"),
    resume: Annotated[
        bool, typer.Option(help="continue from the job's newest checkpoint, if any")
    ] = True,
    device: Annotated[
        Device | None, typer.Option(help="overrides the spec's resources.device")
    ] = None,
) -> None:
    """Train SPEC here, with a progress bar; ends with the metrics and the model's path."""
    with user_errors():
        spec = load_spec(spec_path)
        check_components(spec)
        job_dir = data_dir / "jobs" / spec.name
        with _progress() as progress:
            result = training.run(
                spec,
                job_dir=job_dir,
                callbacks=ProgressCallbacks(progress),
                device=None if device is None else device.value,
                resume=resume,
            )
    if result.resumed_from_step is not None:
        console.print(f"resumed from step {result.resumed_from_step}")
    console.print(f"{result.steps} steps: {_metrics_line(result.metrics)}", highlight=False)
    console.print(f"model: {result.model_path}", highlight=False)


@app.command()
def validate(spec_path: SpecArg) -> None:
    """Check SPEC: its fields, its data, and that the model fits the data (a dry run)."""
    with user_errors():
        spec = load_spec(spec_path)
        check_components(spec)
        bundle = datasets.load_data(spec.data, seed=spec.training.seed)
        # checked on the meta device only: a model, or activations, too big for the
        # limits is refused without this process allocating it
        params, memory = models.check_model(
            spec.model,
            **bundle.model_sizes(),
            batch_size=spec.data.batch_size,
            precision=spec.training.precision,
            memory_limit_mb=spec.resources.memory_limit_mb,
        )
        training.check_schedule(spec, bundle)
    console.print(f"{spec_path}: ok ({spec.name}, {bundle.task})", highlight=False)
    console.print(f"parameters: {params:,}")
    console.print(f"estimated memory: {memory:.1f} MB at batch size {spec.data.batch_size}")


def _read_features(path: Path, label_column: str | None) -> np.ndarray:
    """The feature rows of a .npz (array "x") or a .csv (header row; a label column, if
    present, is dropped so a labelled test file predicts as is)."""
    if not path.is_file():
        raise DataError(str(path), "no such file")
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as arrays:
            if "x" not in arrays:
                raise DataError(str(path), f"no array 'x' in it (found {sorted(arrays.files)})")
            return arrays["x"]
    if path.suffix.lower() != ".csv":
        raise DataError(str(path), "predict reads .npz (array x) or .csv files")
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    header, body = rows[0], [r for r in rows[1:] if r]
    keep = [i for i, name in enumerate(header) if name.strip() != (label_column or "label")]
    try:
        return np.array([[float(r[i]) for i in keep] for r in body])
    except (ValueError, IndexError) as e:
        raise DataError(str(path), f"not a numeric table ({e})") from None


@app.command()
def predict(
    model_dir: Annotated[Path, typer.Argument(help="a job dir or its model.safetensors")],
    input: Annotated[
        str, typer.Argument(help="a .npz/.csv of samples, or a text prompt for a language model")
    ],
) -> None:
    """Run a trained model on INPUT with the preprocessing it was trained with."""
    with user_errors():
        if not Path(model_dir).exists():
            raise DataError(str(model_dir), "no such model file or job directory")
        trained = training.load_trained_model(model_dir)
        if trained.task == "language_model":
            text = trained.generate(input, GENERATED_TOKENS)
            console.print(input + text, highlight=False, markup=False)
            return
        outputs = trained.predict(_read_features(Path(input), trained.spec.data.label_column))
    show: Callable[[Any], str] = str
    classes = trained.preprocessing.get("classes")
    if trained.task == "classification" and classes is not None:
        show = lambda i: str(classes[int(i)])  # noqa: E731 - labels as the training data named them
    for row in np.atleast_1d(outputs):
        console.print(show(row), highlight=False)


@app.command()
def migrate(
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="a SQLAlchemy URL; default DESCENT_DATABASE_URL, else the SQLite file in "
            "DESCENT_DATA_DIR",
        ),
    ] = None,
) -> None:
    """Create or upgrade the service's database to the newest schema."""
    # imported here: train, validate and predict need no database libraries
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, OperationalError

    from jobs.settings import get_settings
    from jobs.store import migrate as migrate_store

    url = database_url or get_settings().database_url
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        err_console.print(
            "[red]error:[/red] the database URL is not a SQLAlchemy URL "
            "(e.g. postgresql+psycopg://user:password@host/db or sqlite:///path/descent.db)",
            highlight=False,
        )
        raise typer.Exit(1) from None
    try:
        migrate_store(url)
    except (ArgumentError, OperationalError) as e:
        # the shown URL hides the password; the driver's own message names host and port
        reason = getattr(e, "orig", None) or e
        err_console.print(f"[red]error:[/red] cannot migrate {shown}: {reason}", highlight=False)
        raise typer.Exit(1) from None
    console.print(f"{shown}: schema up to date", highlight=False)


# An API process is GIL-bound: one a core, but not more than a few by default, as each
# holds its own memory (the engine, NumPy) and database connection pool.
MAX_DEFAULT_API_WORKERS = 4
DEFAULT_API_WORKERS = min(os.cpu_count() or 1, MAX_DEFAULT_API_WORKERS)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="the address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="the port to listen on")] = 8000,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="the SQLite file, data sets and job files; default DESCENT_DATA_DIR, else "
            "./descent-data",
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=0, help="worker processes to start beside the API")
    ] = 1,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="the API only (workers run elsewhere)")
    ] = False,
    api_workers: Annotated[
        int,
        typer.Option(
            "--api-workers",
            min=1,
            help="API processes sharing HOST:PORT; default the machine's cores, at most "
            f"{MAX_DEFAULT_API_WORKERS}",
        ),
    ] = DEFAULT_API_WORKERS,
) -> None:
    """Run the service: migrations applied, the API on HOST:PORT (in API_WORKERS
    processes), the reaper, and worker processes on the same broker; prints the URL and
    a key."""
    # imported here: train, validate and predict need no web server
    import uvicorn
    from sqlalchemy.exc import ArgumentError, OperationalError

    from jobs.settings import get_settings
    from jobs.store import make_engine, make_session_factory
    from jobs.store import migrate as migrate_store
    from jobs.store import repository as repo

    if data_dir is not None:
        # through the environment, so that the Celery app (configured at import) and the
        # worker processes started below read the same data dir
        os.environ["DESCENT_DATA_DIR"] = str(data_dir)
        get_settings.cache_clear()
    settings = get_settings()
    try:
        migrate_store(settings.database_url)
    except (ArgumentError, OperationalError) as e:
        reason = getattr(e, "orig", None) or e
        err_console.print(f"[red]error:[/red] cannot open the database: {reason}", highlight=False)
        raise typer.Exit(1) from None

    # Before anything imports prometheus_client: the API processes count their requests
    # in files here, and whichever answers GET /metrics sums them (server/telemetry.py).
    # Emptied, so that a restart does not carry on the last run's counts.
    metrics_dir = settings.data_dir / "prometheus"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)

    from workers.queue import CeleryQueue
    from workers.reaper import Reaper

    base = f"http://{host}:{port}"
    console.print(f"Descent API: {base}/api/v1  (docs: {base}/docs)", highlight=False)
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    if settings.api_key is not None:
        console.print("API key: the one in DESCENT_API_KEY (an admin key)", highlight=False)
    else:
        with sessions() as session:
            _, secret = repo.create_key(session, "descent serve", admin=True)
        console.print(f"API key (admin, shown once): {secret}", highlight=False)
    count = 0 if no_worker else workers
    gpus = owned_gpus(None) if count else ()
    worker_processes = [
        subprocess.Popen([sys.executable, "-m", "descent", "worker", *arguments])
        for arguments in worker_arguments(count, gpus)
    ]
    shared = f", sharing GPUs {','.join(map(str, gpus))}" if gpus else ""
    console.print(f"workers: {count} (descent worker{shared})", highlight=False)
    # one reaper for the service, here, beside uvicorn's supervisor of the API processes
    reaper = Reaper(sessions, CeleryQueue(), settings)
    reaper.start()
    try:
        # an import string, which is how uvicorn starts several processes; each builds
        # its own app from the environment set above (descent/asgi.py)
        uvicorn.run(
            "descent.asgi:create_app", factory=True, host=host, port=port, workers=api_workers
        )
    finally:
        reaper.stop()
        _stop_processes(worker_processes)
        engine.dispose()


# A worker's warm shutdown waits for its jobs to checkpoint and hand themselves back.
WORKER_STOP_SECONDS = 90.0


def _stop_processes(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=WORKER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@app.command()
def worker(
    queues: Annotated[
        str, typer.Option(help="the queues to take jobs from, comma-separated: cpu, gpu")
    ] = "cpu",
    concurrency: Annotated[
        int, typer.Option(min=1, help="jobs this worker runs at once, each in a process")
    ] = 1,
    gpus: Annotated[
        str | None,
        typer.Option(
            envvar=WORKER_GPUS_ENV,
            help="the GPU ids this worker owns, comma-separated (0,1); each job gets the "
            "ones it needs to itself; default every GPU the engine sees",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="default DESCENT_DATA_DIR, else ./descent-data"),
    ] = None,
) -> None:
    """Run a worker: takes jobs from the broker (DESCENT_BROKER_URL, else the embedded
    one in the data dir) and trains each in a child process."""
    from jobs.store.models import Queue

    names = [name.strip() for name in queues.split(",")]
    unknown = [name for name in names if name not in set(Queue)]
    if unknown:
        raise typer.BadParameter(
            f"no queue {unknown[0]!r}; the queues are {', '.join(Queue)}", param_hint="--queues"
        )
    try:
        owned = owned_gpus(gpus)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--gpus") from None
    if Queue.gpu in names and not owned:
        found = "the engine sees none here" if gpus is None else "--gpus lists none"
        raise typer.BadParameter(
            f"a worker of the gpu queue needs GPUs, and {found}: give it some with --gpus 0,1",
            param_hint="--queues",
        )
    # the one place the worker's tasks read their GPUs from (workers/gpus.py)
    os.environ[WORKER_GPUS_ENV] = ",".join(map(str, owned))
    if data_dir is not None:
        os.environ["DESCENT_DATA_DIR"] = str(data_dir)
    from workers.celery_app import app as celery_app

    celery_app.worker_main(
        [
            "worker",
            f"--queues={','.join(names)}",
            f"--concurrency={concurrency}",
            "--loglevel=INFO",
            # the embedded broker has no broadcast; workers need not know each other
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )
