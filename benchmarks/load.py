"""Service load: `descent serve` under open-loop reads, read saturation, job creates and
submit-to-running latency, on the embedded set-up and on PostgreSQL + Redis.

    .venv/bin/python benchmarks/load.py [--setup embedded|redis|both] [--duration 60]
        [--rate 500] [--client raw|httpx] [--api-workers N] [--json PATH]

Each set-up gets a service of its own, started here (`descent serve --no-worker`, on a
free port, in a temporary data dir; its API processes are serve's default unless
--api-workers says) and torn down after:
  embedded  SQLite (WAL) and the filesystem:// broker in the data dir
  redis     a fresh PostgreSQL database on DESCENT_TEST_POSTGRES_URL's server (dropped
            after) and a free Redis db number (flushed after)

Phases, in this order (the workers of the first are stopped before the others start, so
that the creates' messages stay on the broker to be counted):
  submit     W idle `descent worker`s; tiny jobs submitted one at a time, each polled
             every 5 ms until it is running, the next one once it has finished
  reads      open loop: GET /api/v1/jobs/{id} sent at fixed times 1/rate apart whatever
             the responses do, latency counted from each request's scheduled send time,
             so a stall counts against every request it delays (no coordinated omission)
  saturation closed loop: C connections, each sending its next GET when the last returns
  creates    C connections POSTing tiny digits-mlp specs, each with a new
             Idempotency-Key; then every created job is fetched (GET) and looked for
             among the broker's messages

The load generator runs in this process and shares the machine's cores with the server;
CPU time per request is reported for both (the server's read from /proc, so Linux only).
The per-key concurrent job limit and the reaper's re-publishing of queued jobs are
lifted for the run (see SERVICE_ENV). Goals are printed as met or missed; the exit code
is 0 either way. Results go to benchmarks/RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import datetime
import importlib.metadata
import itertools
import json
import math
import os
import platform
import re
import secrets
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import psycopg
import redis
from psycopg import sql
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.settings import Settings
from jobs.store import make_engine, make_session_factory
from server.routes.jobs import validate_spec

ROOT = Path(__file__).resolve().parents[1]
API = "/api/v1"
TOKEN = "load-" + secrets.token_hex(24)
EXAMPLE = json.loads((ROOT / "examples" / "digits-mlp.json").read_text())
SERVICE_ENV = {
    "DESCENT_API_KEY": TOKEN,
    # the creates phase leaves thousands of jobs queued on purpose
    "DESCENT_MAX_CONCURRENT_JOBS_PER_KEY": str(10**9),
    # no worker runs during the creates: the reaper would publish their jobs again
    "DESCENT_QUEUED_TIMEOUT_SECONDS": "3600",
}
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
START_TIMEOUT_S = 60.0
JOB_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 30.0
RUNNING_POLL_S = 0.005
FINISHED_POLL_S = 0.05
WARMUP_S = 2.0
REDIS_CLAIM_KEY = "descent-load-benchmark"
BENCH_PREFIX = "descent_load_"
# Celery's INFO line when a task returns: "Task descent.run_job[<id>] succeeded in 1.8s: ..."
TASK_DONE = re.compile(r"Task descent\.run_job\[[^\]]+\] succeeded in ")

GOAL_READ_P99_MS = 25.0
GOAL_CREATES_PER_S = 300.0
GOAL_SUBMIT_TO_RUNNING_S = 1.0


def tiny_spec(name: str) -> dict[str, Any]:
    """examples/digits-mlp.json cut to 5 steps: a real spec, which POST /jobs validates
    end to end and a worker trains in well under a second."""
    spec = copy.deepcopy(EXAMPLE)
    spec["name"] = name
    spec["scheduler"]["warmup_steps"] = 2
    spec["training"] = {
        "max_steps": 5,
        "eval_every_steps": 5,
        "checkpoint_every_steps": 5,
        "seed": 0,
    }
    return spec


def percentiles(values: list[float], scale: float = 1.0) -> dict[str, float]:
    """p50, p90, p99 (nearest rank) and max, times `scale`; NaN for no values."""
    ordered = sorted(values) or [math.nan]

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))] * scale

    return {"p50": rank(0.5), "p90": rank(0.9), "p99": rank(0.99), "max": ordered[-1] * scale}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of process `pid` and its live descendants (an API
    run with several uvicorn workers is a tree)."""
    ticks: dict[int, int] = {}
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):  # a process that ended while we looked
            # the fields after "(command)": state, ppid, ... utime is the 12th, stime the 13th
            fields = stat.read_text().rsplit(")", 1)[1].split()
            ticks[int(stat.parent.name)] = int(fields[11]) + int(fields[12])
            parents[int(stat.parent.name)] = int(fields[1])
    tree, grew = {pid}, True
    while grew:
        below = {p for p, parent in parents.items() if parent in tree} - tree
        tree |= below
        grew = bool(below)
    return sum(ticks.get(p, 0) for p in tree) / os.sysconf("SC_CLK_TCK")


# ---- HTTP clients ------------------------------------------------------------------------
class Client(Protocol):
    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]: ...

    async def close(self) -> None: ...


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class RawClient:
    """HTTP/1.1 keep-alive over asyncio streams with `size` connections, taken in turn:
    little client work per request, so the load generator leaves the shared cores to
    the server (httpx.AsyncClient took ~18x the CPU a request here; --client httpx)."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port = host, port
        self.idle: asyncio.Queue[Stream | None] = asyncio.Queue()
        for _ in range(size):
            self.idle.put_nowait(None)  # opened on first use

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        stream = await self.idle.get()
        try:
            if stream is None:
                stream = await asyncio.open_connection(self.host, self.port)
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                answer = await self._exchange(stream, method, path, body, headers or {})
        except BaseException:
            if stream is not None:
                stream[1].close()
            self.idle.put_nowait(None)
            raise
        self.idle.put_nowait(stream)
        return answer

    async def _exchange(
        self, stream: Stream, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        reader, writer = stream
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines.append(f"Authorization: Bearer {TOKEN}")
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        writer.write("\r\n".join(lines).encode() + b"\r\n\r\n" + body)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
            elif name.lower() == b"transfer-encoding":
                raise OSError("chunked responses are not read by this client")
        return int(head[9:12]), await reader.readexactly(length)

    async def close(self) -> None:
        while not self.idle.empty():
            stream = self.idle.get_nowait()
            if stream is not None:
                stream[1].close()


class HttpxClient:
    def __init__(self, host: str, port: int, size: int) -> None:
        self.client = httpx.AsyncClient(
            base_url=f"http://{host}:{port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
            timeout=REQUEST_TIMEOUT_S,
        )

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        response = await self.client.request(method, path, content=body, headers=headers)
        return response.status_code, response.content

    async def close(self) -> None:
        await self.client.aclose()


CLIENTS: dict[str, Callable[[str, int, int], Client]] = {"raw": RawClient, "httpx": HttpxClient}
CLIENT_ERRORS = (OSError, asyncio.IncompleteReadError, TimeoutError, httpx.HTTPError)


# ---- the service's processes -------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """`descent serve --no-worker` and `descent worker`s, each in its own session (so the
    whole group goes on the way out), logging to files under `logs`."""

    def __init__(self, env: dict[str, str], logs: Path, api_workers: int | None) -> None:
        self.env, self.logs = env, logs
        self.port = free_port()
        self.processes: list[subprocess.Popen[bytes]] = []
        self.log_paths: dict[int, Path] = {}
        options = [] if api_workers is None else ["--api-workers", str(api_workers)]
        self.api = self._start("serve", "--port", str(self.port), "--no-worker", *options)
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=REQUEST_TIMEOUT_S,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._ready():
            if self.api.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"descent serve did not start:\n{self.log_tail(self.api)}")
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            return self.client.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def _start(self, *args: str) -> subprocess.Popen[bytes]:
        path = self.logs / f"{args[0]}-{len(self.processes)}.log"
        log = path.open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "descent", *args],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        self.log_paths[process.pid] = path
        return process

    def api_processes(self) -> int:
        """How many processes serve the API: uvicorn's spawned children, else serve."""
        spawned = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):  # a process that ended while we looked
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == self.api.pid:
                    spawned += b"spawn_main" in (stat.parent / "cmdline").read_bytes()
        return spawned or 1

    def log_tail(self, process: subprocess.Popen[bytes], lines: int = 30) -> str:
        return "\n".join(self.log_paths[process.pid].read_text().splitlines()[-lines:])

    def worker(self) -> subprocess.Popen[bytes]:
        return self._start("worker")

    def tasks_done(self, workers: list[subprocess.Popen[bytes]]) -> int:
        """Tasks the workers' logs say have returned: the worker is idle again only
        then, a moment after the job's row says finished (its training child exits)."""
        return sum(len(TASK_DONE.findall(self.log_paths[w.pid].read_text())) for w in workers)

    @staticmethod
    def stop(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with contextlib.suppress(ProcessLookupError):  # a training child left behind
            os.killpg(process.pid, signal.SIGKILL)

    def close(self) -> None:
        self.client.close()
        for process in reversed(self.processes):
            self.stop(process)


# ---- set-ups -----------------------------------------------------------------------------
def job_id_of(message: bytes | str) -> str:
    """The job id a Celery message (kombu's JSON envelope) carries: run_job(job_id)."""
    envelope = json.loads(message)
    body = envelope["body"]
    if envelope["properties"].get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args, _kwargs, _embed = json.loads(body)
    return str(args[0])


@dataclass
class SetUp:
    name: str
    env: dict[str, str]
    # (job id -> messages for it, queue name -> messages), read from the broker's storage
    broker_messages: Callable[[], tuple[Counter[str], dict[str, int]]]
    versions: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def embedded(data_dir: Path) -> Iterator[SetUp]:
    folder = data_dir / "broker" / "messages"  # workers/celery_app.py's layout

    def messages() -> tuple[Counter[str], dict[str, int]]:
        files = sorted(folder.glob("*.msg"))
        # kombu names a message file <time>_<uuid>.<exchange>.msg
        queues = Counter(path.name.split(".")[-2] for path in files)
        return Counter(job_id_of(path.read_bytes()) for path in files), dict(queues)

    yield SetUp(
        "embedded",
        {"DESCENT_DATABASE_URL": "", "DESCENT_BROKER_URL": ""},
        messages,
        {"SQLite": sqlite3.sqlite_version},
    )


@contextlib.contextmanager
def fresh_postgres_database(admin_url: str) -> Iterator[str]:
    """A new database on the server of `admin_url`, dropped (with any connections left
    to it) on the way out; no other database is touched."""
    admin = make_url(admin_url)
    name = BENCH_PREFIX + secrets.token_hex(6)
    libpq = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield admin.set(database=name).render_as_string(hide_password=False)
        finally:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@contextlib.contextmanager
def free_redis_db(base_url: str) -> Iterator[redis.Redis]:
    """An empty Redis db on the server of `base_url`, claimed with a marker key that only
    one claimant can set (db 0, everyone's default, is never taken); flushed after."""
    server = redis.Redis.from_url(base_url)
    databases = int(server.config_get("databases")["databases"])
    for number in range(1, databases):
        db = redis.Redis.from_url(base_url, db=number)
        if db.set(REDIS_CLAIM_KEY, os.getpid(), nx=True):
            if db.dbsize() == 1:
                break
            db.delete(REDIS_CLAIM_KEY)
    else:
        raise RuntimeError(f"no empty Redis db on {base_url} (of {databases})")
    try:
        yield db
    finally:
        db.flushdb()


@contextlib.contextmanager
def postgres_redis(postgres_url: str, redis_url: str) -> Iterator[SetUp]:
    with fresh_postgres_database(postgres_url) as database, free_redis_db(redis_url) as db:
        number = db.connection_pool.connection_kwargs["db"]

        def messages() -> tuple[Counter[str], dict[str, int]]:
            jobs: Counter[str] = Counter()
            queues: dict[str, int] = {}
            # kombu keeps a queue as one list per priority step: "cpu", "cpu\x06\x163", ...
            for key in db.scan_iter(_type="list"):
                items = db.lrange(key, 0, -1)
                queues[key.decode(errors="replace")] = len(items)
                jobs.update(job_id_of(item) for item in items)
            return jobs, queues

        with psycopg.connect(
            make_url(database).set(drivername="postgresql").render_as_string(False)
        ) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        versions = {"PostgreSQL": str(row[0] if row else "?")}
        versions["Redis server"] = str(db.info("server")["redis_version"])
        broker = f"{redis_url.rstrip('/')}/{number}"
        yield SetUp(
            "redis",
            {"DESCENT_DATABASE_URL": database, "DESCENT_BROKER_URL": broker},
            messages,
            versions,
        )


# ---- phases ------------------------------------------------------------------------------
def submit_to_running(service: Service, workers: int, jobs: int) -> dict[str, Any]:
    """Seconds from sending POST /jobs to the job seen running (polled), and from the
    store's created_at to its started_at; two warm-up jobs first, not counted."""
    started = [service.worker() for _ in range(workers)]
    posts: list[float] = []
    seen: list[float] = []
    stored: list[float] = []
    try:
        for i in range(jobs + 2):
            begin = time.perf_counter()
            response = service.client.post(
                f"{API}/jobs",
                json=tiny_spec(f"submit-{i}"),
                headers={"Idempotency-Key": f"submit-{i}"},
            )
            if response.status_code != 201:
                raise RuntimeError(f"POST /jobs answered {response.status_code}: {response.text}")
            job_id = response.json()["id"]
            answered = time.perf_counter() - begin
            job = _wait(service, job_id, lambda j: j["status"] != "queued", RUNNING_POLL_S)
            elapsed = time.perf_counter() - begin
            finished = _wait(
                service, job_id, lambda j: j["finished_at"] is not None, FINISHED_POLL_S
            )
            if finished["status"] != "succeeded":
                raise RuntimeError(f"job {job_id} ended {finished['status']}: {finished['error']}")
            deadline = time.monotonic() + JOB_TIMEOUT_S
            while service.tasks_done(started) <= i:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"no worker logged its task done:\n{service.log_tail(started[0])}"
                    )
                time.sleep(FINISHED_POLL_S)
            if i >= 2:
                posts.append(answered)
                seen.append(elapsed)
                created = datetime.datetime.fromisoformat(job["created_at"])
                stored.append(
                    (datetime.datetime.fromisoformat(job["started_at"]) - created).total_seconds()
                )
    finally:
        for process in started:
            service.stop(process)
    return {
        "workers": workers,
        "jobs": jobs,
        "post_s": percentiles(posts),
        "seen_s": percentiles(seen),
        "store_s": percentiles(stored),
    }


def _wait(
    service: Service, job_id: str, done: Callable[[dict[str, Any]], bool], poll: float
) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job = service.client.get(f"{API}/jobs/{job_id}").json()
        if done(job):
            return dict(job)
        time.sleep(poll)
    raise RuntimeError(f"job {job_id} did not get there in {JOB_TIMEOUT_S} s: {job}")


@dataclass
class Tally:
    """What one phase's requests did, and the CPU both sides spent on them."""

    server_pid: int
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)  # by status code or exception
    ok: int = 0
    start: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.cpu = (time.process_time(), cpu_seconds(self.server_pid))

    async def timed(self, call: Awaitable[tuple[int, bytes]], since: float, ok: int) -> bytes:
        try:
            status, body = await call
        except CLIENT_ERRORS as e:
            self.errors[type(e).__name__] += 1
            return b""
        self.latencies.append(time.perf_counter() - since)
        if status != ok:
            self.errors[str(status)] += 1
            return b""
        self.ok += 1
        return body

    def summary(self) -> dict[str, Any]:
        elapsed = time.perf_counter() - self.start
        client_cpu = time.process_time() - self.cpu[0]
        server_cpu = cpu_seconds(self.server_pid) - self.cpu[1]
        per_request = 1e3 / max(len(self.latencies), 1)
        return {
            "ok": self.ok,
            "errors": dict(self.errors),
            "seconds": elapsed,
            "rate": self.ok / elapsed,
            "latency_ms": percentiles(self.latencies, 1e3),
            "client_cpu_ms": client_cpu * per_request,
            "server_cpu_ms": server_cpu * per_request,
        }


async def open_loop(client: Client, pid: int, path: str, rate: float, seconds: float) -> Tally:
    """GETs at start + i/rate; each one's latency runs from that scheduled time."""
    tally = Tally(pid)
    interval = 1.0 / rate
    start = time.perf_counter()
    tasks = []
    for i in range(round(rate * seconds)):
        scheduled = start + i * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(tally.timed(client.request("GET", path), scheduled, 200)))
    await asyncio.gather(*tasks)
    return tally


async def closed_loop(
    client: Client,
    pid: int,
    connections: int,
    seconds: float,
    send: Callable[[Tally], Awaitable[object]],
) -> Tally:
    """`connections` loops, each calling `send` again as soon as its last call returned."""
    tally = Tally(pid)
    deadline = tally.start + seconds

    async def loop() -> None:
        while time.perf_counter() < deadline:
            await send(tally)

    await asyncio.gather(*(loop() for _ in range(connections)))
    return tally


def reads_sender(client: Client, path: str) -> Callable[[Tally], Awaitable[bytes]]:
    def send(tally: Tally) -> Awaitable[bytes]:
        return tally.timed(client.request("GET", path), time.perf_counter(), 200)

    return send


async def creates(
    client: Client, pid: int, connections: int, seconds: float
) -> tuple[Tally, list[str]]:
    created: list[str] = []
    run = secrets.token_hex(4)
    numbers = itertools.count()

    async def send(tally: Tally) -> None:
        i = next(numbers)
        body = json.dumps(tiny_spec(f"create-{i}")).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": f"{run}-{i}"}
        call = client.request("POST", f"{API}/jobs", body, headers)
        answer = await tally.timed(call, time.perf_counter(), 201)
        if answer:
            created.append(json.loads(answer)["id"])

    return await closed_loop(client, pid, connections, seconds, send), created


async def stored_jobs(client: Client, ids: list[str], connections: int) -> int:
    """How many of `ids` GET /jobs/{id} finds queued (no worker ran since)."""
    found = 0
    pending = iter(ids)

    async def loop() -> None:
        nonlocal found
        for job_id in pending:
            status, body = await client.request("GET", f"{API}/jobs/{job_id}")
            found += status == 200 and json.loads(body)["status"] == "queued"

    await asyncio.gather(*(loop() for _ in range(connections)))
    return found


def validate_cost_ms(repeats: int = 30) -> float:
    """Median ms of server.routes.jobs.validate_spec on the creates' spec, in this process
    (a built-in data set: the session is never queried)."""
    settings = Settings()
    with make_session_factory(make_engine("sqlite://"))() as session:
        times = []
        for i in range(repeats + 3):
            begin = time.perf_counter()
            validate_spec(tiny_spec(f"v-{i}"), session, 0, settings)
            times.append(time.perf_counter() - begin)
    return statistics.median(times[3:]) * 1e3


# ---- a set-up's run ----------------------------------------------------------------------
def show(setup: str, phase: str, text: str) -> None:
    print(f"[{setup}] {phase}: {text}", flush=True)


def goal(met: bool, text: str) -> str:
    return f"goal {text}: {'met' if met else 'MISSED'}"


def latency_text(result: dict[str, Any]) -> str:
    ms = result["latency_ms"]
    return (
        f"p50 {ms['p50']:.1f} ms, p90 {ms['p90']:.1f}, p99 {ms['p99']:.1f}, max {ms['max']:.1f}; "
        f"{result['rate']:.1f}/s over {result['seconds']:.1f} s, errors {result['errors'] or 0}; "
        f"CPU a request: client {result['client_cpu_ms']:.2f} ms, "
        f"server {result['server_cpu_ms']:.2f} ms"
    )


def run_setup(setup: SetUp, data_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, **SERVICE_ENV, "DESCENT_DATA_DIR": str(data_dir), **setup.env}
    env = {k: v for k, v in env.items() if v}  # "" unsets: the embedded defaults
    logs = data_dir / "logs"
    logs.mkdir(parents=True)
    service = Service(env, logs, args.api_workers)
    results: dict[str, Any] = {
        "versions": setup.versions,
        "api_processes": service.api_processes(),
        "load_average": {"start": os.getloadavg()},
    }
    show(
        setup.name,
        "service",
        f"{results['api_processes']} API process(es); load average {os.getloadavg()[0]:.2f}",
    )
    try:
        if "submit" in args.phases:
            r = submit_to_running(service, args.workers, args.submit_jobs)
            ok = r["seen_s"]["max"] < GOAL_SUBMIT_TO_RUNNING_S
            show(
                setup.name,
                "submit-to-running",
                f"{r['jobs']} jobs, {r['workers']} worker(s): p50 {r['seen_s']['p50']:.3f} s, "
                f"max {r['seen_s']['max']:.3f} s (POST answered: p50 {r['post_s']['p50']:.3f} s; "
                f"store created_at -> started_at: p50 {r['store_s']['p50']:.3f} s, "
                f"max {r['store_s']['max']:.3f} s); "
                + goal(ok, f"max < {GOAL_SUBMIT_TO_RUNNING_S:g} s"),
            )
            results["submit"] = {**r, "goal_met": ok}
        results.update(asyncio.run(_load_phases(setup, service, data_dir, args)))
    finally:
        service.close()
    results["load_average"]["end"] = os.getloadavg()
    show(setup.name, "done", f"load average (1, 5, 15 min): {os.getloadavg()}")
    return results


async def _load_phases(
    setup: SetUp, service: Service, data_dir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    pid = service.api.pid
    make = CLIENTS[args.client]
    job_id = service.client.post(f"{API}/jobs", json=tiny_spec("read-me")).json()["id"]
    path = f"{API}/jobs/{job_id}"
    if "reads" in args.phases:
        client = make("127.0.0.1", service.port, args.connections)
        await open_loop(client, pid, path, args.rate, WARMUP_S)
        r = (await open_loop(client, pid, path, args.rate, args.duration)).summary()
        await client.close()
        ok = r["latency_ms"]["p99"] < GOAL_READ_P99_MS and not r["errors"]
        show(
            setup.name,
            f"open-loop reads at {args.rate:g}/s",
            latency_text(r) + "; " + goal(ok, f"p99 < {GOAL_READ_P99_MS:g} ms, no errors"),
        )
        results["reads"] = {**r, "target_rate": args.rate, "goal_met": ok}
    if "saturation" in args.phases:
        client = make("127.0.0.1", service.port, args.connections)
        send = reads_sender(client, path)
        await closed_loop(client, pid, args.connections, WARMUP_S, send)
        r = (await closed_loop(client, pid, args.connections, args.saturation_s, send)).summary()
        await client.close()
        show(setup.name, f"read saturation, {args.connections} connections", latency_text(r))
        results["saturation"] = {**r, "connections": args.connections}
    if "creates" in args.phases:
        cost = validate_cost_ms()
        show(setup.name, "creates", f"validate_spec alone: {cost:.1f} ms a call, here")
        client = make("127.0.0.1", service.port, args.create_connections)
        tally, ids = await creates(client, pid, args.create_connections, args.create_s)
        r = tally.summary()
        ok = r["rate"] > GOAL_CREATES_PER_S and not r["errors"]
        show(
            setup.name,
            f"creates, {args.create_connections} connections",
            latency_text(r) + "; " + goal(ok, f"> {GOAL_CREATES_PER_S:g}/s, no errors"),
        )
        found = await stored_jobs(client, ids, args.create_connections)
        await client.close()
        on_broker, queues = setup.broker_messages()
        missing = sum(1 for i in ids if not on_broker[i])
        show(
            setup.name,
            "creates checked",
            f"{found} of {len(ids)} created jobs queued in the store; {len(ids) - missing} "
            f"of {len(ids)} have a message on the broker ({sum(on_broker.values())} "
            f"messages: {queues})",
        )
        results["creates"] = {
            **r,
            "connections": args.create_connections,
            "validate_spec_ms": cost,
            "created": len(ids),
            "in_store": found,
            "on_broker": len(ids) - missing,
            "broker_queues": queues,
            "goal_met": ok and found == len(ids) and not missing,
        }
    return results


# ---- report ------------------------------------------------------------------------------
def versions() -> dict[str, str]:
    packages = ["uvicorn", "fastapi", "starlette", "sqlalchemy", "celery", "kombu", "redis"]
    packages += ["psycopg", "uvloop", "httptools", "httpx"]
    found = {"Python": platform.python_version(), "cores": str(os.cpu_count())}
    found.update({p: importlib.metadata.version(p) for p in packages})
    return found


def markdown(results: dict[str, Any], args: argparse.Namespace) -> str:
    rows = [
        "| set-up (API processes) | reads p50 / p90 / p99 / max ms (at rate/s) | read errors "
        "| saturation req/s (p99 ms) | creates/s (p99 ms) | jobs in store / on broker "
        "| submit-to-running p50 / max s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        cells = [f"{name} ({r['api_processes']})"]
        if "reads" in r:
            ms = r["reads"]["latency_ms"]
            cells += [
                f"{ms['p50']:.1f} / {ms['p90']:.1f} / {ms['p99']:.1f} / {ms['max']:.1f} "
                f"({r['reads']['rate']:.0f})",
                str(sum(r["reads"]["errors"].values())),
            ]
        else:
            cells += ["—", "—"]
        if "saturation" in r:
            s = r["saturation"]
            cells.append(f"{s['rate']:.0f} ({s['latency_ms']['p99']:.0f})")
        else:
            cells.append("—")
        if "creates" in r:
            c = r["creates"]
            cells += [
                f"{c['rate']:.0f} ({c['latency_ms']['p99']:.0f})",
                f"{c['in_store']} / {c['on_broker']} of {c['created']}",
            ]
        else:
            cells += ["—", "—"]
        if "submit" in r:
            cells.append(f"{r['submit']['seen_s']['p50']:.3f} / {r['submit']['seen_s']['max']:.3f}")
        else:
            cells.append("—")
        rows.append("| " + " | ".join(cells) + " |")
    all_versions = versions()
    for r in results.values():
        all_versions.update(r["versions"])
    head = [
        f"### load.py --setup {args.setup} --duration {args.duration:g} --rate {args.rate:g} "
        f"--client {args.client}, {datetime.date.today().isoformat()}",
        "",
        "- " + ", ".join(f"{k} {v}" for k, v in all_versions.items()),
        "- load average (1 min) at each set-up's start and end: "
        + ", ".join(
            f"{name} {r['load_average']['start'][0]:.2f} -> {r['load_average']['end'][0]:.2f}"
            for name, r in results.items()
        ),
        "",
    ]
    return "\n".join(head + rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setup", choices=["embedded", "redis", "both"], default="both")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of open-loop reads")
    p.add_argument("--rate", type=float, default=500.0, help="open-loop reads a second")
    p.add_argument("--client", choices=sorted(CLIENTS), default="raw")
    p.add_argument("--connections", type=int, default=16, help="for the reads")
    p.add_argument("--saturation-s", type=float, default=10.0)
    p.add_argument("--create-connections", type=int, default=8)
    p.add_argument("--create-s", type=float, default=10.0)
    p.add_argument(
        "--api-workers", type=int, help="descent serve's API processes (default: serve's)"
    )
    p.add_argument("--workers", type=int, default=1, help="for submit-to-running")
    p.add_argument("--submit-jobs", type=int, default=15)
    p.add_argument(
        "--phases",
        type=lambda s: set(s.split(",")),
        default={"submit", "reads", "saturation", "creates"},
        help="comma-separated subset of submit,reads,saturation,creates",
    )
    p.add_argument(
        "--postgres-url", default=os.environ.get("DESCENT_TEST_POSTGRES_URL", DEFAULT_POSTGRES)
    )
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    names = ["embedded", "redis"] if args.setup == "both" else [args.setup]
    results: dict[str, Any] = {}
    for name in names:
        with tempfile.TemporaryDirectory(prefix="descent-load-") as tmp:
            data_dir = Path(tmp) / "data"
            context = (
                embedded(data_dir)
                if name == "embedded"
                else postgres_redis(args.postgres_url, args.redis_url)
            )
            with context as setup:
                results[name] = run_setup(setup, data_dir, args)
    print()
    print(markdown(results, args))
    if args.json:
        args.json.write_text(json.dumps({"versions": versions(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
