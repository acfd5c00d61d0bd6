"""Evaluate one candidate: sandboxed training, then the sealed evaluator, all recorded in the store.

    prepare data (trusted, cached by content hash)
      -> copy harness + candidate + data into run_dir/work  (the sandbox's only writable folder)
      -> run the harness in the sandbox under time and memory limits
      -> run the evaluator in a separate trusted process on work/artifacts
      -> run_dir/final_info.json (outside the sandbox's reach), store row updated

A run whose key (template content, candidate source, seeds) already finished
successfully is reused unless `force` is set: its files are written into the
requested folder from the store, which holds everything a run's folder held
(final_info, candidate, logs), so a deleted or reused folder loses nothing.
Runs of one key, and the preparation of one data set, are serialised across
processes by file locks: concurrent sessions on one home wait for each other's
result instead of computing it twice or racing on the same files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from filelock import FileLock

from base.cascade import ScreenDecision, decide
from base.secrets import digest, home_secrets, resolve_private
from base.store import INTERRUPTED, Run, Store, run_key, source_hash
from base.template import PROJECT_ROOT, Template
from jax_workloads.sealed import FAIL_MARKER
from sandbox import backends
from sandbox.limits import Outcome, supervise
from sandbox.logs import MiB, kept_text


@dataclass(frozen=True)
class EvalRequest:
    """Everything one evaluation needs, from CLI flags and template.toml."""

    template: Template
    sources: dict[str, str]          # editable path -> candidate source
    seeds: int
    sandbox: backends.Sandbox        # a resolved backend and its settings
    home: Path                       # the tool's folder: store, caches, default run folders
    out_dir: Path
    kind: str = "candidate"
    force: bool = False
    reuse_failed: bool = False       # the agent loop also reuses runs that failed by themselves
    label: str = ""
    draw: int = 0                    # the secrets' draw (base.secrets): 0 the home's own, k > 0 fresh ones


def eval_requests(template: Template, candidates: list[tuple[str, dict[str, str]]], *, seeds: int,
                  sandbox: backends.Sandbox, home: Path, out: Path | None, force: bool = False,
                  kind: str = "candidate") -> list[EvalRequest]:
    """`scientist eval` and `baseline`: one request per labelled candidate, each in its own folder.

    Without `out`, a dated folder per candidate under <home>/runs/<template>/; with it, `out` itself
    for one candidate, else a folder per label inside it.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    requests = []
    for label, sources in candidates:
        out_dir = (home / "runs" / template.name / f"{stamp}-{label}" if out is None
                   else out if len(candidates) == 1 else out / label)
        requests.append(EvalRequest(template=template, sources=sources, seeds=seeds, sandbox=sandbox, home=home,
                                    out_dir=out_dir.resolve(), kind=kind, force=force, label=label))
    return requests


@dataclass
class EvalResult:
    """How one evaluation ended; `run` is the store's row, `out_dir` the folder holding its files now."""

    run: Run
    out_dir: Path
    cached: bool = False
    timings: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.run.status == "ok"


@dataclass(frozen=True)
class Job:
    """One computation, complete and by value: what a local slot or a Ray node needs to run a candidate."""

    template: Template
    sources: dict[str, str]
    seeds: int
    sandbox: backends.Sandbox
    home: Path                             # caches (data, compiled programs) on the machine that computes
    cpus: tuple[int, ...] | None = None    # a local slot's cores; None: all
    # The home's secrets (base.secrets) and which draw of them to use: only the trusted evaluator process
    # sees them (on its stdin), never the sandbox, a file or a command line.
    secrets: dict[str, int] = field(default_factory=dict, repr=False)
    draw: int = 0


@dataclass
class Computed:
    """How a computation ended, by value: what the store records about it, and where it ran."""

    status: str                            # "ok" or "failed"
    reason: str | None = None
    final_info: dict | None = None
    logs: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    error_tail: str | None = None
    node: str | None = None


class Executor(Protocol):
    """Where computations run (scientist.executors): threads of this process over its slots, or Ray tasks."""

    def compute(self, job: Job, run_dir: Path, cancel: threading.Event | None = None) -> Computed:
        """Compute the job, leaving its files in run_dir; blocks until done; KeyboardInterrupt when cancelled."""
        ...


class Inline:
    """The simplest executor: the computation runs in the calling thread, on the whole machine."""

    def compute(self, job: Job, run_dir: Path, cancel: threading.Event | None = None) -> Computed:
        return compute(job, run_dir, cancel)


def evaluate(req: EvalRequest, store: Store, executor: Executor | None = None,
             cancel: threading.Event | None = None) -> EvalResult:
    """Evaluate the request's candidate, or return the stored result of the same computation."""
    template_hash = req.template.content_hash()
    key = run_key(template_hash, source_hash(req.sources), req.seeds, req.draw)
    secrets = home_secrets(store, req.template)
    find = store.find_finished if req.reuse_failed else store.find_ok
    with _lock(req.home, f"run-{key}"):
        if not req.force and (previous := find(key)) is not None:
            materialize(store, previous, req.out_dir)
            return EvalResult(previous, req.out_dir, cached=True, timings=previous.timings or {})
        run_dir = req.out_dir
        _clear_run_dir(run_dir)
        run_id = store.start_run(kind=req.kind, template=req.template.name, template_hash=template_hash,
                                 sources=req.sources, seeds=req.seeds, sandbox=req.sandbox.backend, out_dir=run_dir,
                                 draw=req.draw)
        job = Job(template=req.template, sources=req.sources, seeds=req.seeds, sandbox=req.sandbox, home=req.home,
                  secrets=secrets, draw=req.draw)
        t0 = time.time()
        try:
            done = (executor or Inline()).compute(job, run_dir, cancel)
        except KeyboardInterrupt:
            store.finish_run(run_id, status="failed", reason=INTERRUPTED, timings={"total": time.time() - t0},
                             logs=_read_logs(run_dir))
            raise
        except backends.SandboxUnavailable as e:
            store.finish_run(run_id, status="failed", reason=f"sandbox unavailable: {e}",
                             timings={"total": time.time() - t0})
            raise RuntimeError(f"sandbox unavailable: {e}") from None
        store.finish_run(run_id, status=done.status, reason=done.reason, final_info=done.final_info,
                         metric=req.template.spec.metric.name if done.final_info else None, timings=done.timings,
                         error_tail=done.error_tail, logs=done.logs, node=done.node)
        return EvalResult(store.get(run_id), run_dir, timings=done.timings)


def compute(job: Job, run_dir: Path, cancel: threading.Event | None = None) -> Computed:
    """Train the candidate in the sandbox, then score it with the sealed evaluator, in run_dir; no store.

    Raises KeyboardInterrupt when cancelled and SandboxUnavailable when the backend cannot run here;
    every other way a run can end is a Computed with a one-line reason.
    """
    t0 = time.time()
    timings: dict[str, float] = {}

    def failed(reason: str, tail: str | None) -> Computed:
        timings["total"] = time.time() - t0
        return Computed("failed", reason=reason, logs=_read_logs(run_dir), timings=timings, error_tail=tail)

    spec = job.template.spec
    try:
        work = _populate(job, run_dir, timings)
    except DataPreparationFailed as e:
        return failed(str(e), None)
    t_trace = time.time()
    traced = _trace(job, run_dir, work, cancel)
    timings["trace"] = time.time() - t_trace
    if not traced.ok:
        return failed(_reason(traced, job.template, "tracer"), traced.log_tail)
    outcome = backends.run(
        job.sandbox,
        backends.Job(script=spec.entrypoint, work=work, libs_parent=PROJECT_ROOT, cpus=job.cpus,
                     xla_optimize=spec.compile.optimize,
                     jax_cache=(cache := _candidate_cache(job, work / EXPORTS))),
        spec.limits, run_dir / "train.log", cancel)
    timings.update(_harness_timings(work, outcome))
    if outcome.exceeded == "disk":
        shutil.rmtree(work, ignore_errors=True)  # give the space back; the log says what happened
    if not outcome.ok:
        return failed(_reason(outcome, job.template), outcome.log_tail)
    if job.sources == job.template.editable_sources():
        _mark_shipped_cache(job, cache)
    t_eval = time.time()
    ev = _run_evaluator(job, work, run_dir, cancel)
    timings["evaluate"] = time.time() - t_eval
    if not ev.ok:
        return failed(_reason(ev, job.template, "evaluator"), ev.log_tail)
    timings["total"] = time.time() - t0
    return Computed("ok", final_info=json.loads((run_dir / "final_info.json").read_text()),
                    logs=_read_logs(run_dir), timings=timings)


def evaluate_many(requests: list[EvalRequest], store: Store, executor: Executor | None = None, workers: int = 1,
                  on_result: Callable[[int, EvalResult], None] | None = None) -> list[EvalResult]:
    """Evaluate the requests, up to `workers` at once (each on a slot of the executor); results in their order.

    on_result(i, result) is called as each one ends. A stop (Ctrl-C, SIGTERM, a sandbox that cannot run)
    ends the runs still in flight, recorded as interrupted, and is raised again.
    """
    cancel = threading.Event()
    done: dict[int, EvalResult] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="eval") as pool:
        futures = {pool.submit(evaluate, req, store, executor, cancel): i for i, req in enumerate(requests)}
        try:
            for future in as_completed(futures):
                i = futures[future]
                done[i] = future.result()
                if on_result is not None:
                    on_result(i, done[i])
        except BaseException:
            cancel.set()  # before the pool waits for its threads: their runs end now
            raise
    return [done[i] for i in range(len(requests))]


def screen_request(req: EvalRequest) -> EvalRequest:
    """The request's screen (the evaluation cascade): the template's [screen] laid over its settings, in
    out_dir/screen, with the screen's seeds where [screen] sets them (never more than the request's), else the
    request's.

    TemplateError when the template declares no [screen].
    """
    overlay = req.template.spec.screen
    seeds = min(overlay.seeds, req.seeds) if overlay is not None and overlay.seeds is not None else req.seeds
    return replace(req, template=req.template.screened(), seeds=seeds, out_dir=req.out_dir / "screen", kind="screen",
                   label=f"{req.label} (screen)" if req.label else "screen")


def stored_result(req: EvalRequest, store: Store) -> Run | None:
    """The finished run `evaluate` would reuse for this request, if the store holds one (nothing computed)."""
    key = run_key(req.template.content_hash(), source_hash(req.sources), req.seeds, req.draw)
    return (store.find_finished if req.reuse_failed else store.find_ok)(key)


@dataclass
class Cascaded:
    """One candidate through the cascade: its screen, the decision (None when the screen failed), its full run."""

    screen: EvalResult
    decision: ScreenDecision | None = None
    full: EvalResult | None = None


def cascade_many(requests: list[EvalRequest], baseline_sources: dict[str, str], store: Store,
                 executor: Executor | None = None, workers: int = 1,
                 on_screen: Callable[[int, Cascaded], None] | None = None,
                 on_result: Callable[[int, EvalResult], None] | None = None) -> tuple[EvalResult, list[Cascaded]]:
    """`scientist eval --cascade`: screen the baseline and every candidate, promote the screens within reach of the
    baseline's (base.cascade.decide; the bar of a session moves to better full results, here none is known before
    the decisions), then evaluate the promoted candidates fully. Returns the baseline's screen and, in the
    requests' order, each candidate's screen, decision and full result.

    on_screen(i, cascaded) is called once candidate i is decided (or its screen failed); on_result(i, full) as each
    full evaluation ends. A baseline screen that fails leaves nothing to compare with: RuntimeError, one line.
    """
    first = requests[0]
    # The baseline's screen goes beside the first candidate's (its folder's screen/), never outside --out.
    base_screen_req = replace(screen_request(replace(first, sources=baseline_sources, label="baseline")),
                              out_dir=first.out_dir / "baseline-screen")
    screens = evaluate_many([base_screen_req, *map(screen_request, requests)], store, executor, workers)
    base_screen, rest = screens[0], screens[1:]
    if not base_screen.ok:
        raise RuntimeError(f"the baseline's screen failed, so no screen can be compared with it: "
                           f"{base_screen.run.reason}")
    spec = first.template.spec
    metric, direction = spec.metric.name, spec.metric.direction
    bar = base_screen.run.result.summary(metric).values
    out: list[Cascaded] = []
    for i, screen in enumerate(rest):
        c = Cascaded(screen)
        if screen.ok:
            c.decision = decide(screen.run.result.summary(metric).values, bar, direction, "baseline",
                                spec.screen.margin)
        out.append(c)
        if on_screen is not None:
            on_screen(i, c)
    promoted = [i for i, c in enumerate(out) if c.decision is not None and c.decision.promoted]

    def said(j: int, res: EvalResult) -> None:
        out[promoted[j]].full = res
        if on_result is not None:
            on_result(promoted[j], res)

    evaluate_many([requests[i] for i in promoted], store, executor, workers, on_result=said)
    return base_screen, out


def cached_baseline(store: Store, template: Template, seeds: int) -> Run | None:
    """The template's baseline for these seeds, if the store holds it (not computed here)."""
    return store.find_ok(run_key(template.content_hash(), source_hash(template.editable_sources()), seeds))


def _lock(home: Path, name: str) -> FileLock:
    """An exclusive lock shared by every process and thread using this home (held while a run or data is made)."""
    (home / "locks").mkdir(parents=True, exist_ok=True)
    # A new lock object (and file descriptor) per use: flock then also makes threads of one process wait.
    return FileLock(home / "locks" / f"{name}.lock")


def sandbox_cache(home: Path, template: str, exports: Path) -> Path:
    """The JAX compilation cache the training sandbox of a candidate with these exports may write.

    It is named by the exports' content: the training sandbox runs only the template's harness on the
    exports (the candidate's Python ran in the tracer's sandbox), so what it compiles is a function of
    the exports and nothing else of the candidate's. Two candidates share a cache only when their
    exports are byte for byte the same (an edit to a comment, an attack in an import that changed
    nothing traced): the same programs. Any other candidate has a cache of its own, so none can
    poison the compiled programs of another.
    """
    h = hashlib.sha256()
    for path in sorted(exports.iterdir()):
        h.update(f"{path.name}:{hashlib.sha256(path.read_bytes()).hexdigest()};".encode())
    return home / "cache" / "jax-sandbox" / f"{template}-{h.hexdigest()[:16]}"


def _shipped_pointer(job: Job, caches: Path) -> Path:
    return caches / f"{job.template.name}-{job.template.content_hash()[:16]}.shipped"


def _mark_shipped_cache(job: Job, cache: Path) -> None:
    """Name `cache`, that of a finished run of the template's own (shipped) candidate, as the one new candidates'
    caches start from (_candidate_cache). Written after the run, so it names a cache whose entries are whole."""
    pointer = _shipped_pointer(job, cache.parent)
    tmp = pointer.with_name(f"{pointer.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(cache.name)
    tmp.replace(pointer)


def _candidate_cache(job: Job, exports: Path) -> Path:
    """The compilation cache of the candidate's training sandbox (sandbox_cache), made on first use as a copy of
    the shipped candidate's when one ran (_mark_shipped_cache).

    A harness's programs that do not depend on the candidate's exports (an environment's rollouts, an inner
    training loop fed the candidate's outputs as data) are then compiled once per template version, not once per
    candidate. A copy, never a link: what the shipped run compiled ran only the template's own code, and a
    candidate's sandbox may write its cache, never the shipped one's.
    """
    cache = sandbox_cache(job.home, job.template.name, exports)
    pointer = _shipped_pointer(job, cache.parent)
    if cache.exists() or not pointer.is_file():
        return cache
    source = cache.parent / pointer.read_text().strip()
    if source == cache or source.parent != cache.parent or not source.is_dir():
        return cache
    try:
        return _publish_once(cache, lambda tmp: shutil.copytree(source, tmp, symlinks=True, dirs_exist_ok=True))
    except OSError:  # the source is being pruned: start empty
        return cache


RUN_ENTRIES = ("trace", "work", "candidate", "trace.log", "train.log", "eval.log", "final_info.json")
LOG_FILES = ("trace.log", "train.log", "eval.log")


def _read_logs(run_dir: Path) -> dict[str, str]:
    return {name: (run_dir / name).read_text(errors="replace") for name in LOG_FILES if (run_dir / name).is_file()}


def materialize(store: Store, run: Run, dest: Path) -> None:
    """Write a recorded run's files (candidate/, logs, final_info.json) into dest, from the store.

    The store, not the run's original folder, is the record: that folder may have been
    deleted, moved or reused for another run since. Nothing is done when dest is the
    run's own folder and still holds its result.
    """
    dest = dest.resolve()
    original = Path(run.out_dir).resolve() if run.out_dir else None
    if dest == original and (run.final_info is None or (dest / "final_info.json").is_file()):
        return
    logs = store.run_logs(run.id)
    if not logs and original is not None and original.is_dir():
        logs = _read_logs(original)  # a run recorded before the store kept logs
    write_run_files(dest, run.candidate_source, logs, run.final_info)


def write_run_files(dest: Path, sources: dict[str, str], logs: dict[str, str], final_info: dict | None) -> None:
    """A run folder from a run's record: candidate/, its logs and final_info.json (what a user reads)."""
    _clear_run_dir(dest)
    for f, src in sources.items():
        (dest / "candidate" / f).parent.mkdir(parents=True, exist_ok=True)
        (dest / "candidate" / f).write_text(src)
    for name in LOG_FILES:
        if name in logs:
            (dest / name).write_text(logs[name])
    if final_info is not None:
        (dest / "final_info.json").write_text(json.dumps(final_info, indent=1))


def _clear_run_dir(run_dir: Path) -> None:
    """Remove what an earlier run left in run_dir, and nothing else: --out may name a user's folder."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in RUN_ENTRIES:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


class DataPreparationFailed(Exception):
    """The template's evaluator could not prepare the training data; one line, a failed run."""


def _populate(job: Job, run_dir: Path, timings: dict) -> Path:
    """Lay out run_dir/work (harness, public config, prepared data) and run_dir/candidate (what the user reads).

    The candidate goes only into run_dir/trace, the tracer's own sandbox (see _trace), never beside the harness.
    """
    spec = job.template.spec
    work = run_dir / "work"
    (work / "artifacts").mkdir(parents=True)
    _lay_out(job, work, [*spec.harness], with_candidate=False)
    for f, src in job.sources.items():
        (run_dir / "candidate" / f).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / "candidate" / f).write_text(src)
    t = time.time()
    data = _prepared_data(job)
    timings["prepare"] = time.time() - t
    if data.is_dir():
        # A copy, not a link: the sandbox may write to its data, never to the cache.
        shutil.copytree(data, work / "data")
    return work


def _lay_out(job: Job, folder: Path, files: list[str], with_candidate: bool) -> None:
    """Copy template files, the public config and (if asked) the candidate's sources into a sandbox's folder."""
    for f in files:
        (folder / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(job.template.root / f, folder / f)
    if with_candidate:
        for f, src in job.sources.items():
            (folder / f).parent.mkdir(parents=True, exist_ok=True)
            (folder / f).write_text(src)
    (folder / "config.json").write_text(json.dumps({"config": job.template.spec.config, "seeds": job.seeds},
                                                   indent=1))


EXPORTS = "exports"
EXPORT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
MAX_EXPORTS, MAX_EXPORT_BYTES = 64, 256 * 2**20


def _trace(job: Job, run_dir: Path, work: Path, cancel: threading.Event | None) -> Outcome:
    """Run the template's tracer on the candidate in a sandbox of its own; copy its exports into work/exports.

    The only process that imports the candidate. It gets the tracer, the harness files, the public
    config and the candidate; no data and no compilation cache (a cache it could write is one it could
    poison for the harness). Whatever it leaves behind (threads, exit handlers) ends with its sandbox;
    only plain files named like exports are copied, never links, and the harness checks each one is
    plain computation before it runs it. run_dir/trace stays for the curious (its files are the candidate's).
    """
    spec = job.template.spec
    trace = run_dir / "trace"
    (trace / EXPORTS).mkdir(parents=True)
    _lay_out(job, trace, [*spec.harness, spec.tracer], with_candidate=True)
    outcome = backends.run(
        job.sandbox, backends.Job(script=spec.tracer, work=trace, libs_parent=PROJECT_ROOT, cpus=job.cpus,
                                  xla_optimize=spec.compile.optimize),
        spec.limits.for_tracer(), run_dir / "trace.log", cancel)
    if outcome.ok:
        try:
            _copy_exports(trace / EXPORTS, work / EXPORTS)
        except ValueError as e:
            outcome = replace(outcome, returncode=1, log_tail=f"{FAIL_MARKER}{e}")
    if outcome.exceeded == "disk":
        shutil.rmtree(trace, ignore_errors=True)  # give the space back; the log says what happened
    return outcome


def _copy_exports(src: Path, dest: Path) -> None:
    """Copy the tracer's exports: plain files with plain names, bounded in number and size; ValueError otherwise."""
    dest.mkdir(parents=True, exist_ok=True)
    if src.is_symlink() or not src.is_dir():  # a link would have us list, and copy, a folder of the host's
        raise ValueError(f"the tracer's {EXPORTS}/ is no longer a plain folder")
    entries = sorted(os.scandir(src), key=lambda e: e.name)
    if len(entries) > MAX_EXPORTS:
        raise ValueError(f"the tracer wrote {len(entries)} files to {EXPORTS}/, more than {MAX_EXPORTS}")
    total = 0
    for entry in entries:
        if not EXPORT_NAME.match(entry.name) or not entry.is_file(follow_symlinks=False):
            raise ValueError(f"the tracer left {EXPORTS}/{entry.name[:60]!r}, which is not a plain file")
        fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_EXPORT_BYTES - total + 1)
        total += len(data)
        if total > MAX_EXPORT_BYTES:
            raise ValueError(f"the tracer's exports are larger than {MAX_EXPORT_BYTES // 2**20} MiB")
        (dest / entry.name).write_bytes(data)


def data_cache(job: Job) -> Path:
    """Where the job's prepared data lives in its home: named by template, content hash, secrets and seeds.

    The data depends on the resolved [private] values, so their digest is in the name (which reveals nothing of them).
    """
    private = digest(_private(job))
    return job.home / "cache" / "data" / f"{job.template.name}-{job.template.content_hash()}-{private}-s{job.seeds}"


def _publish_once(cache: Path, fill: Callable[[Path], None]) -> Path:
    """The folder `cache`, made once: `fill` writes a fresh temporary folder, which is renamed into place.

    Under a lock beside the folder, not in the home: homes that share a data folder (a link) share its lock
    too, and whoever waited finds the folder made. `fill` raising leaves nothing behind.
    """
    if cache.is_dir():
        return cache
    cache.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(cache.with_name(f"{cache.name}.lock")):
        if cache.is_dir():  # another session, thread or task made it while we waited
            return cache
        tmp = cache.with_name(f"{cache.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            fill(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        tmp.rename(cache)
    return cache


def _prepared_data(job: Job) -> Path:
    """The template's training data for this many seeds, made once per content hash and secrets (per machine)."""
    cache = data_cache(job)

    def prepare(tmp: Path) -> None:
        outcome = _evaluator_process(job, ["prepare", "--dir", str(tmp)], tmp.parent / f"{cache.name}.log")
        if not outcome.ok:
            tail = " ".join(outcome.log_tail.strip().split())[-300:]
            raise DataPreparationFailed(f"preparing the {job.template.name} data failed: {tail}")

    return _publish_once(cache, prepare)


def data_files(job: Job) -> dict[str, bytes]:
    """The job's prepared data by value, its files by relative path: made in the job's home first if need be.

    What a driver sends a Ray node (scientist.executors), so that each node installs the same data
    (install_data) instead of preparing its own. Raises DataPreparationFailed as compute would.
    """
    cache = _prepared_data(job)
    return {str(p.relative_to(cache)): p.read_bytes() for p in sorted(cache.rglob("*")) if p.is_file()}


def install_data(job: Job, files: dict[str, bytes]) -> Path:
    """Put prepared data received by value (data_files) into the job's home's cache, where compute finds it."""
    for name in files:
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ValueError(f"prepared data file {name!r} is not a path inside its folder")

    def write(tmp: Path) -> None:
        for name, data in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)

    return _publish_once(data_cache(job), write)


def _run_evaluator(job: Job, work: Path, run_dir: Path, cancel: threading.Event | None) -> Outcome:
    out = run_dir / "final_info.json"
    out.unlink(missing_ok=True)
    return _evaluator_process(job, ["evaluate", "--dir", str(work), "--out", str(out)], run_dir / "eval.log",
                              cancel)


def _private(job: Job) -> dict:
    """The job's [private] values: the template's, with the home's secrets (of the job's draw) in place."""
    return resolve_private(job.template.spec.private, job.secrets, job.draw)


def _evaluator_process(job: Job, args: list[str], log: Path, cancel: threading.Event | None = None) -> Outcome:
    """The trusted evaluator on the job's [private] values, which it reads from its stdin (never a file or argv),
    with the job's [config] (its profile or screen laid over template.toml's, which the evaluator would read)."""
    argv = [sys.executable, "-I", "-m", "scientist.evaluator", *args, "--template", str(job.template.root),
            "--seeds", str(job.seeds), "--jax-cache", str(job.home / "cache" / "jax-eval"), "--private", "stdin",
            "--config", "stdin"]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(job.home), "JAX_PLATFORMS": "cpu",
           "PYTHONHASHSEED": "0", "LANG": "C.UTF-8", **backends.xla_env(job.template.spec.compile.optimize)}
    settings = {"private": _private(job), "config": job.template.spec.config}
    return supervise(argv, env=env, cwd=job.home, limits=job.template.spec.limits.for_evaluator(), log_path=log,
                     cpus=job.cpus, cancel=cancel, stdin=json.dumps(settings).encode())


def _harness_timings(work: Path, outcome: Outcome) -> dict[str, float]:
    """Phase times the harness reported, checked to be numbers; sandbox_start from our own clock."""
    timings = {"sandbox": outcome.wall_s}
    try:
        marks = json.loads((work / "timings.json").read_text())
        started = float(marks.pop("started"))
        timings["sandbox_start"] = started - outcome.started_at
        timings.update({k: float(v) for k, v in marks.items() if isinstance(v, int | float)})
    except (OSError, ValueError, KeyError, TypeError):
        pass  # a failed or hostile run may leave no or bad timings; they are informational only
    return timings


def _reason(outcome: Outcome, template: Template, stage: str = "run") -> str:
    """One line saying why a stage of a run failed: "tracer", "run" (the harness) or "evaluator"."""
    limits = template.spec.limits
    where = "the evaluator" if stage == "evaluator" else "the run"  # the tracer is the run's first stage
    if outcome.timed_out:
        if stage == "tracer":  # a limit of its own (Limits.for_tracer): name it
            return (f"timed out: the run's tracer (importing and exporting the candidate) exceeded its time limit "
                    f"of {limits.for_tracer().time_s:g} s ([limits] trace_time_s)")
        limit = limits.eval_time_s if stage == "evaluator" else limits.time_s
        return f"timed out: {where} exceeded its time limit of {limit:g} s"
    if outcome.out_of_memory:
        return f"out of memory: {where} exceeded the memory limit of {limits.memory_mb} MB"
    if outcome.exceeded == "processes":
        return f"process limit: {where} reached {limits.processes} processes and threads (a fork bomb?)"
    if outcome.exceeded == "disk":
        return f"disk limit: {where} wrote more than {limits.disk_mb} MB in its folder (its files were removed)"
    if outcome.exceeded == "output":
        return (f"output limit: {where} wrote more than {limits.output_mb} MB to its output (a flood?); its log keeps "
                f"{kept_text(limits.log_head_mb * MiB, limits.log_tail_mb * MiB)}")
    lines = [ln.strip() for ln in outcome.log_tail.splitlines() if ln.strip()]
    marked = [ln[len(FAIL_MARKER):] for ln in lines if ln.startswith(FAIL_MARKER)]
    if marked:
        return marked[-1]
    last = lines[-1] if lines else "no output"
    if "MemoryError" in last or "RESOURCE_EXHAUSTED" in last:
        return f"out of memory: {where} failed to allocate under the memory limit of {limits.memory_mb} MB"
    if outcome.returncode is not None and outcome.returncode < 0:
        try:
            name = signal.Signals(-outcome.returncode).name
        except ValueError:
            name = f"signal {-outcome.returncode}"
        return f"{where} was killed by {name}: {last[:300]}"
    return f"{where} crashed (exit code {outcome.returncode}): {last[:300]}"
