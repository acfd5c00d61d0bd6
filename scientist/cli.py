"""The `scientist` command line.

Flags and template.toml are turned into one `EvalRequest` per candidate and
passed down; every expected failure prints one line and exits non-zero:
1 when a run failed, 2 when the command could not start (bad template, flag or file).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from base.stats import compare
from base.store import Store, run_key, source_hash
from base.template import (
    DEFAULT_TEMPLATES_DIR,
    Template,
    TemplateError,
    list_template_names,
    load_template,
)
from sandbox.backends import Sandbox, SandboxUnavailable, resolve
from scientist import runner
from scientist.literature import SOURCES

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Research automation for small JAX experiment templates.")


def _console(stderr: bool = False) -> Console:
    """Rich output; without a terminal (cron, CI, a pipe, a file) lines and tables are written whole.

    Rich assumes 80 columns when it cannot ask a terminal, and cuts table cells to fit ("candid…").
    """
    c = Console(stderr=stderr, highlight=False)
    return c if c.is_terminal else Console(stderr=stderr, highlight=False, width=100_000)


console = _console()
err = _console(stderr=True)

# Absolute from here on: sandboxes mount folders under it and run elsewhere.
HomeOpt = typer.Option(Path(".scientist"), "--home", envvar="SCIENTIST_HOME", resolve_path=True,
                       help="Folder for the store, caches and run folders.")
TemplatesDirOpt = typer.Option(DEFAULT_TEMPLATES_DIR, "--templates-dir", show_default="the bundled templates",
                               help="Where templates live.")
SandboxOpt = typer.Option("auto", "--sandbox",
                          help="auto (docker if it answers with the image, else bwrap), docker, bwrap or process "
                               "(process: no isolation).")
ImageOpt = typer.Option(None, "--image", help="Docker image (default scientist-sandbox:cpu; :cuda with --gpus).")
GpusOpt = typer.Option(None, "--gpus", help="GPUs for the runs: all, or a list such as 0,1 (default: CPU only).")
DockerHostOpt = typer.Option(None, "--docker-host", envvar="DOCKER_HOST",
                             help="Docker daemon address (default: the local socket).")
TemplateOpt = typer.Option(..., "--template", "-t", help="Template name or folder.")
SeedsOpt = typer.Option(None, "--seeds", help="Seeds (default: the template's).")


class UsageError(Exception):
    """A bad flag, file or template: reported as one line, exit code 2."""


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _open_store(home: Path) -> Store:
    return Store(home / "store.sqlite")


def _baseline_run(store: Store, template: Template, seeds: int):
    key = run_key(template.content_hash(), source_hash(template.editable_sources()), seeds)
    return store.find_ok(key)


def _read_candidate(template: Template, path: Path) -> dict[str, str]:
    editable = template.spec.editable
    if not path.exists():
        raise UsageError(f"candidate {path} does not exist")
    if path.is_dir():
        missing = [f for f in editable if not (path / f).is_file()]
        if missing:
            raise UsageError(f"candidate folder {path} lacks the editable file(s) {', '.join(missing)}")
        return {f: (path / f).read_text() for f in editable}
    if len(editable) != 1:
        raise UsageError(f"template {template.name} has several editable files ({', '.join(editable)}); "
                         "pass a folder holding them as --candidate")
    try:
        return {editable[0]: path.read_text()}
    except UnicodeDecodeError:
        raise UsageError(f"candidate {path} is not a text file") from None


def _fmt(x: float, digits: int = 4) -> str:
    return f"{x:.{digits}f}"


def _results_table(template: Template, results: list[tuple[str, runner.EvalResult]], baseline) -> Table:
    metric = template.spec.metric
    arrow = "higher" if metric.direction == "max" else "lower"
    table = Table(title=f"{template.name}: {metric.name} ({arrow} is better)")
    for col in ("candidate", "status", "mean ± s.e.", "95% CI", "n", "vs baseline", "time"):
        numeric = col not in ("candidate", "status", "vs baseline")
        table.add_column(col, justify="right" if numeric else "left", no_wrap=numeric)
    for label, res in results:
        run = res.run
        time_s = "cached" if res.cached else f"{res.timings.get('total', 0):.1f}s"
        if not res.ok:
            table.add_row(label, "[red]failed[/red]", "", "", "", "", time_s)
            continue
        m = run.final_info["metrics"][metric.name]
        versus = ""
        if baseline is not None and baseline.id == run.id:
            versus = "(baseline)"
        elif baseline is not None:
            base = baseline.final_info["metrics"][metric.name]["values"]
            c = compare(m["values"], base, metric.direction)
            color = {"better": "green", "worse": "red"}.get(c["verdict"], "yellow")
            versus = f"[{color}]{c['difference']:+.4f}, p={c['p_value']:.3g}, {c['verdict']}[/{color}]"
        table.add_row(label, "[green]ok[/green]", f"{_fmt(m['mean'])} ± {_fmt(m['stderr'])}",
                      f"[{_fmt(m['ci95'][0])}, {_fmt(m['ci95'][1])}]", str(m["n"]), versus, time_s)
    return table


def _sandbox(name: str, image: str | None, gpus: str | None, docker_host: str | None) -> Sandbox:
    """Resolve the --sandbox flags, saying what auto chose when it matters; exit 2 when none can run."""
    try:
        sb = resolve(name, image=image, docker_host=docker_host, gpus=gpus)
    except SandboxUnavailable as e:
        _fail(str(e))
    if sb.note:
        err.print(f"[yellow]note:[/yellow] {escape(sb.note)}")
    if sb.backend == "process":
        err.print("[yellow]warning:[/yellow] --sandbox process runs candidates without isolation")
    return sb


def _evaluate_all(template: Template, candidates: list[tuple[str, dict[str, str]]], *, seeds: int,
                  sandbox: Sandbox, home: Path, out: Path | None, force: bool, kind: str) -> int:
    backend = sandbox.backend
    store = _open_store(home)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results: list[tuple[str, runner.EvalResult]] = []
    for label, sources in candidates:
        if out is None:
            out_dir = home / "runs" / template.name / f"{stamp}-{label}"
        else:
            out_dir = out if len(candidates) == 1 else out / label
        req = runner.EvalRequest(template=template, sources=sources, seeds=seeds, sandbox=sandbox, home=home,
                                 out_dir=out_dir.resolve(), kind=kind, force=force, label=label)
        with console.status(f"[bold]{label}[/bold]: training in the {backend} sandbox, then sealed evaluation"):
            try:
                res = runner.evaluate(req, store)
            except KeyboardInterrupt:
                _fail("interrupted; the run is recorded as failed", 130)
            except RuntimeError as e:
                _fail(str(e))
        results.append((label, res))
        _report_one(label, res, template)
    baseline = _baseline_run(store, template, seeds)
    console.print(_results_table(template, results, baseline))
    if baseline is None and kind != "baseline":
        console.print(f"no baseline cached for {seeds} seeds: run `scientist baseline --template {template.name}`"
                      " to compare against it")
    return 0 if all(r.ok for _, r in results) else 1


def _report_one(label: str, res: runner.EvalResult, template: Template) -> None:
    run = res.run
    if res.ok:
        m = run.final_info["metrics"][template.spec.metric.name]
        how = f"cached from run {run.id}" if res.cached else f"run {run.id}"
        console.print(f"[green]✓[/green] {label}: {template.spec.metric.name} = {m['mean']:.4f} "
                      f"(95% CI {m['ci95'][0]:.4f} to {m['ci95'][1]:.4f}, n={m['n']}; {how}) "
                      f"{res.out_dir}/final_info.json")
    else:
        err.print(f"[red]✗[/red] {label}: failed: {escape(run.reason or '')} "
                  f"(run {run.id}, log {res.out_dir}/train.log)")


def _load(name: str, templates_dir: Path) -> Template:
    try:
        return load_template(name, templates_dir)
    except TemplateError as e:
        _fail(str(e))


def _seeds(template: Template, seeds: int | None) -> int:
    if seeds is None:
        return template.spec.seeds
    if seeds < 2:
        _fail("--seeds must be at least 2 (an interval needs two seeds)")
    return seeds


@app.command()
def templates(home: Path = HomeOpt, templates_dir: Path = TemplatesDirOpt) -> None:
    """List the templates with their metric, direction and whether a baseline is cached."""
    names = list_template_names(templates_dir)
    if not names:
        _fail(f"no templates found under {templates_dir}")
    store = _open_store(home)
    table = Table(title="templates")
    for col in ("name", "metric", "direction", "seeds", "baseline", "description"):
        table.add_column(col)
    bad = 0
    for name in names:
        try:
            t = load_template(name, templates_dir)
        except TemplateError as e:
            err.print(f"[red]error:[/red] {e}")
            bad += 1
            continue
        base = _baseline_run(store, t, t.spec.seeds)
        cached = f"cached ({base.metric_mean:.4f})" if base else "not computed"
        table.add_row(t.name, t.spec.metric.name, t.spec.metric.direction, str(t.spec.seeds), cached,
                      t.spec.description)
    console.print(table)
    if bad:
        raise typer.Exit(2)


@app.command("eval")
def eval_(
    template: str = TemplateOpt,
    candidate: list[Path] = typer.Option(None, "--candidate", "-c",
                                         help="File replacing the editable file (repeatable)."),
    seeds: int = SeedsOpt,
    out: Path = typer.Option(None, "--out", help="Run folder (a folder per candidate if several)."),
    sandbox: str = SandboxOpt,
    image: str = ImageOpt,
    gpus: str = GpusOpt,
    docker_host: str = DockerHostOpt,
    force: bool = typer.Option(False, "--force", help="Recompute even if the same run is in the store."),
    home: Path = HomeOpt,
    templates_dir: Path = TemplatesDirOpt,
) -> None:
    """Evaluate candidates through the sandbox and the sealed evaluator; print metric and interval."""
    t = _load(template, templates_dir)
    n = _seeds(t, seeds)
    try:
        if candidate:
            cands = [(p.stem, _read_candidate(t, p)) for p in candidate]
        else:
            cands = [("shipped", t.editable_sources())]
    except UsageError as e:
        _fail(str(e))
    sb = _sandbox(sandbox, image, gpus, docker_host)
    raise typer.Exit(_evaluate_all(t, cands, seeds=n, sandbox=sb, home=home, out=out, force=force,
                                   kind="candidate"))


@app.command()
def baseline(
    template: str = TemplateOpt,
    seeds: int = SeedsOpt,
    sandbox: str = SandboxOpt,
    image: str = ImageOpt,
    gpus: str = GpusOpt,
    docker_host: str = DockerHostOpt,
    force: bool = typer.Option(False, "--force", help="Recompute even if cached."),
    home: Path = HomeOpt,
    templates_dir: Path = TemplatesDirOpt,
) -> None:
    """Compute the template's baseline (its shipped editable files) once per content hash."""
    t = _load(template, templates_dir)
    n = _seeds(t, seeds)
    sb = _sandbox(sandbox, image, gpus, docker_host)
    raise typer.Exit(_evaluate_all(t, [("baseline", t.editable_sources())], seeds=n, sandbox=sb,
                                   home=home, out=None, force=force, kind="baseline"))


@app.command()
def runs(
    template: str = typer.Option(None, "--template", "-t", help="Only this template's runs."),
    home: Path = HomeOpt,
) -> None:
    """List the runs recorded in the store."""
    store = _open_store(home)
    table = Table(title=f"runs in {home / 'store.sqlite'}")
    for col in ("id", "template", "kind", "candidate", "seeds", "status", "metric", "reason"):
        table.add_column(col)
    for r in store.runs(template):
        metric = f"{r.metric_mean:.4f} ± {r.metric_stderr:.4f}" if r.metric_mean is not None else ""
        table.add_row(str(r.id), r.template, r.kind, r.candidate_hash[:8], str(r.seeds), r.status, metric,
                      (r.reason or "")[:80])
    console.print(table)


@app.command()
def run(
    template: str = TemplateOpt,
    proposer: str = typer.Option(None, "--proposer", help="llm or evolve (default: llm with --model, else evolve)."),
    model: str = typer.Option(None, "--model", "-m", help="Any litellm model string, e.g. openai/gpt-4o."),
    api_base: str = typer.Option(None, "--api-base", help="OpenAI-compatible server URL (vLLM, Ollama, ...)."),
    ideas: int = typer.Option(3, "--ideas", help="Number of ideas."),
    runs: int = typer.Option(5, "--runs", help="Runs per idea."),
    attempts: int = typer.Option(4, "--attempts", help="Attempts per run before the idea fails."),
    reflections: int = typer.Option(3, "--reflections", help="Reflection rounds per idea (LLM proposer)."),
    seeds: int = SeedsOpt,
    out: Path = typer.Option(None, "--out", help="Output folder; running the same command again resumes it."),
    sandbox: str = SandboxOpt,
    image: str = ImageOpt,
    gpus: str = GpusOpt,
    docker_host: str = DockerHostOpt,
    budget_usd: float = typer.Option(None, "--budget-usd", help="Stop cleanly after spending this much."),
    budget_minutes: float = typer.Option(None, "--budget-minutes", help="Stop cleanly after this long."),
    seed: int = typer.Option(0, "--seed", help="Seed of the evolve proposer."),
    retries: int = typer.Option(5, "--retries", help="Retries of a model call on rate limits, timeouts and 5xx."),
    literature: str = typer.Option(None, "--literature",
                                   help="Check each idea's novelty: semantic-scholar or openalex."),
    literature_url: str = typer.Option(None, "--literature-url", help="Base URL of the literature API."),
    no_writeup: bool = typer.Option(False, "--no-writeup", help="Skip the paper stage."),
    writer: str = typer.Option(None, "--writer", help="template (no model) or llm (default: llm with --model)."),
    no_review: bool = typer.Option(False, "--no-review", help="Skip the review stage."),
    review_ensemble: int = typer.Option(5, "--review-ensemble", help="Reviews per paper."),
    review_reflections: int = typer.Option(5, "--review-reflections", help="Reflection rounds per review."),
    log_json: bool = typer.Option(False, "--log-json", help="Progress as JSON lines on stdout."),
    home: Path = HomeOpt,
    templates_dir: Path = TemplatesDirOpt,
) -> None:
    """Propose ideas, run their experiments in the sandbox, score them sealed; resumable, within budget."""
    from base.llm import LLMError
    from scientist import session
    from scientist.progress import JsonReporter, RichReporter

    t = _load(template, templates_dir)
    proposer = proposer or ("llm" if model else "evolve")
    if proposer not in ("llm", "evolve"):
        _fail(f"unknown proposer {proposer!r}; choose llm or evolve")
    if proposer == "llm" and not model:
        _fail("--proposer llm needs --model (any litellm model string, e.g. openai/gpt-4o)")
    for flag, value in (("--ideas", ideas), ("--runs", runs), ("--attempts", attempts),
                        ("--review-ensemble", review_ensemble)):
        if value < 1:
            _fail(f"{flag} must be at least 1")
    if min(reflections, retries, review_reflections) < 0:
        _fail("--reflections, --review-reflections and --retries must be 0 or more")
    for flag, value in (("--budget-usd", budget_usd), ("--budget-minutes", budget_minutes)):
        if value is not None and value <= 0:
            _fail(f"{flag} must be greater than 0 (nothing can be done with a budget of {value:g})")
    if literature is not None and literature not in SOURCES:
        _fail(f"unknown --literature {literature!r}; choose {' or '.join(SOURCES)}")
    if literature is not None and proposer != "llm":
        _fail("--literature needs a model to judge novelty (--model)")
    if proposer == "evolve" and not (t.root / "search_space.py").is_file():
        _fail(f"template {t.name} has no search_space.py, which --proposer evolve needs")
    writer = _writer(writer or ("llm" if proposer == "llm" else "template"), model)
    if not no_writeup:
        _check_latex()
    n = _seeds(t, seeds)
    backend = _sandbox(sandbox, image, gpus, docker_host)
    slug = proposer if proposer == "evolve" else model.replace("/", "_")
    out_dir = (out or home / "runs" / t.name / slug).resolve()
    cfg = session.RunConfig(template=t, proposer=proposer, model=model, api_base=api_base, ideas=ideas, runs=runs,
                            attempts=attempts, reflections=reflections, seeds=n, sandbox=backend, home=home.resolve(),
                            out_dir=out_dir, budget_usd=budget_usd, budget_minutes=budget_minutes, seed=seed,
                            retries=retries, literature=literature, literature_url=literature_url,
                            literature_key=_literature_key(literature), writeup=not no_writeup,
                            writer=writer, review=not no_review, review_ensemble=review_ensemble,
                            review_reflections=review_reflections)
    try:
        session.check_model(cfg)
    except LLMError as e:
        _fail(str(e))
    store = _open_store(home)
    try:
        session.claim_out_dir(cfg, store)
    except session.OutDirTaken as e:
        _fail(str(e))
    report = JsonReporter() if log_json else RichReporter(console)
    code = session.run_session(cfg, store, report)
    report.close()
    if not log_json:
        _print_summary(out_dir)
    raise typer.Exit(code)


def _writer(writer: str, model: str | None) -> str:
    """A valid --writer choice, or a one-line refusal."""
    if writer not in ("template", "llm") or (writer == "llm" and not model):
        _fail("--writer must be template, or llm together with --model")
    return writer


def _check_latex() -> None:
    """Refuse before any model call is paid for when LaTeX cannot compile a paper here."""
    from papers.latex import LatexMissing, check_installation

    try:
        check_installation()
    except LatexMissing as e:
        _fail(f"{e} (or pass --no-writeup)")


@app.command()
def writeup(
    run_dir: Path = typer.Option(..., "--run-dir", help="A folder written by scientist run."),
    idea: str = typer.Option(None, "--idea", help="Only this idea's paper."),
    writer: str = typer.Option(None, "--writer", help="template or llm (default: llm with --model)."),
    model: str = typer.Option(None, "--model", "-m", help="Any litellm model string."),
    api_base: str = typer.Option(None, "--api-base", help="OpenAI-compatible server URL."),
    retries: int = typer.Option(5, "--retries", help="Retries of a model call on rate limits, timeouts and 5xx."),
    home: Path = HomeOpt,
    templates_dir: Path = TemplatesDirOpt,
) -> None:
    """(Re)write the papers of a finished run from its logged results, without re-running experiments."""
    from base.llm import LLM, Budget, BudgetExceeded, LLMError
    from scientist.writeup import RunFilesMissing, write_papers

    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        _fail(f"{run_dir} holds no summary.json; is it a folder written by scientist run?")
    try:
        summary = json.loads(summary_path.read_text())
        names = [i["name"] for i in summary["ideas"]]
        t = _load(summary["template"], templates_dir)
    except (ValueError, KeyError, TypeError) as e:
        _fail(f"{summary_path} is not a valid summary.json ({type(e).__name__}: {e})")
    if idea is not None and idea not in names:
        _fail(f"no idea {idea!r} in {run_dir} (ideas: {', '.join(names) or 'none'})")
    if not names:
        _fail(f"{run_dir} has no ideas to write about")
    writer = _writer(writer or ("llm" if model else "template"), model)
    _check_latex()
    store = _open_store(home)
    llm = None
    if writer == "llm":
        session_id = store.open_session(out_dir=run_dir.resolve(), template=t.name, proposer="llm", model=model,
                                        args={"writeup": True})[0]
        llm = LLM(model, recorder=store.recorder(session_id), budget=Budget(), api_base=api_base,
                  max_retries=retries)
        try:
            llm.check()
        except LLMError as e:
            _fail(str(e))
    try:
        with console.status("writing papers"):
            results = write_papers(run_dir, t, llm=llm, store=store, idea=idea)
    except (LLMError, BudgetExceeded, RunFilesMissing) as e:
        _fail(str(e), 1)
    table = Table(title=f"papers in {run_dir}")
    for col in ("idea", "status", "pdf or first error", "unverified numbers", "struck sentences"):
        table.add_column(col)
    for r in results:
        table.add_row(escape(r["idea"]), r["status"], escape(r.get("pdf") or r.get("reason") or ""),
                      str(r["unverified_numbers"]), str(r.get("struck_sentences", "?")))
    console.print(table)
    raise typer.Exit(0 if all(r["status"] == "ok" for r in results) else 1)


@app.command()
def review(
    papers: list[Path] = typer.Argument(None, help="PDF files to review."),
    model: str = typer.Option("openai/gpt-4o", "--model", "-m", help="Any litellm model string."),
    api_base: str = typer.Option(None, "--api-base", help="OpenAI-compatible server URL."),
    ensemble: int = typer.Option(5, "--ensemble", help="Independent reviews per paper."),
    reflections: int = typer.Option(5, "--reflections", help="Reflection rounds per review."),
    temperature: float = typer.Option(0.75, "--temperature", help="Sampling temperature of the reviews (> 0)."),
    fewshot: list[Path] = typer.Option(None, "--fewshot", help="Example paper (.pdf/.txt) with its review as .json "
                                                               "beside it (repeatable; default: the shipped one)."),
    no_fewshot: bool = typer.Option(False, "--no-fewshot", help="Review without an example."),
    out: Path = typer.Option(Path("reviews.jsonl"), "--out", help="One JSON line per paper."),
    concurrency: int = typer.Option(4, "--concurrency", help="Papers reviewed at once."),
    run_dir: Path = typer.Option(None, "--run-dir", help="The scientist run folder the papers come from."),
    calibrate: Path = typer.Option(None, "--calibrate", help="CSV of paper,label (accept/reject): report accuracy."),
    threshold: float = typer.Option(6.0, "--threshold", help="Overall score at or above which a paper counts as "
                                                             "accepted, for --calibrate."),
    max_chars: int = typer.Option(60_000, "--max-chars", help="Paper text beyond this is cut, with a note."),
    retries: int = typer.Option(5, "--retries", help="Retries of a model call on rate limits, timeouts and 5xx."),
    budget_usd: float = typer.Option(None, "--budget-usd", help="Stop reviewing after spending this much."),
    home: Path = HomeOpt,
) -> None:
    """Review PDFs with the NeurIPS form: ensemble, reflections, area-chair meta-review, injection guard."""
    import threading

    from base.llm import LLM, Budget, LLMError
    from reviewer.batch import llm_factory, review_papers
    from reviewer.calibrate import best_threshold, load_labels, metrics
    from reviewer.review import ReviewSettings, default_fewshot

    labels: list[tuple[Path, bool]] = []
    if calibrate is not None:
        try:
            labels = load_labels(calibrate)
        except (OSError, ValueError) as e:
            _fail(f"{calibrate}: {e}")
        papers = [p for p, _ in labels]
    if not papers:
        _fail("no papers given (pass PDF files, or --calibrate LABELS.csv)")
    if ensemble < 1 or reflections < 0 or concurrency < 1 or not temperature > 0:
        _fail("--ensemble and --concurrency must be at least 1, --reflections 0 or more, --temperature above 0")
    if budget_usd is not None and budget_usd <= 0:
        _fail("--budget-usd must be greater than 0")
    if run_dir is not None and not (run_dir / "summary.json").is_file():
        _fail(f"{run_dir} holds no summary.json; --run-dir takes a folder written by scientist run")
    shots = () if no_fewshot else tuple(fewshot or default_fewshot())
    for shot in shots:
        if not shot.is_file() or not shot.with_suffix(".json").is_file():
            _fail(f"few-shot example {shot} needs the file itself and its review {shot.with_suffix('.json')}")
    try:
        LLM(model, recorder=None, budget=Budget(), api_base=api_base).check()
    except LLMError as e:
        _fail(str(e))
    settings = ReviewSettings(ensemble=ensemble, reflections=reflections, temperature=temperature, fewshot=shots)
    make_llm = llm_factory(model, recorder=_open_store(home).recorder(None), budget=Budget(usd=budget_usd),
                           api_base=api_base, retries=retries)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("")
    lock = threading.Lock()
    from rich.progress import Progress

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"reviewing {len(papers)} paper(s)", total=len(papers))

        def done(res: dict) -> None:
            with lock:
                with out.open("a") as f:
                    f.write(json.dumps(res) + "\n")
                if res["status"] != "ok":
                    err.print(f"[red]✗[/red] {escape(res['paper'])}: {escape(res['error'] or '')}")
                progress.advance(task)

        results = review_papers(papers, make_llm, settings, concurrency=concurrency, run_dir=run_dir,
                                max_chars=max_chars, on_result=done)
    table = Table(title=f"reviews ({out})")
    for col in ("paper", "status", "Overall", "Decision", "injection flags", "cost"):
        table.add_column(col)
    for r in results:
        rev = r.get("review") or {}
        table.add_row(escape(Path(r["paper"]).name), r["status"] if r["status"] == "ok" else "[red]error[/red]",
                      str(rev.get("Overall", "")), rev.get("Decision", ""), str(len(r.get("injection_flags") or [])),
                      f"${r['usage']['cost_usd']:.4f}")
    console.print(table)
    if labels:
        _print_calibration(labels, results, threshold, out, metrics, best_threshold)
    raise typer.Exit(0 if all(r["status"] == "ok" for r in results) else 1)


def _print_calibration(labels, results, threshold, out, metrics, best_threshold) -> None:
    """Accuracy of Decision and of a threshold on Overall against the labels, as The AI Scientist reports."""
    pairs = [(truth, r["review"]) for (_, truth), r in zip(labels, results, strict=True) if r["status"] == "ok"]
    if not pairs:
        err.print("[red]error:[/red] no paper could be reviewed, so there is nothing to calibrate")
        return
    truth = [t for t, _ in pairs]
    by_decision = metrics(truth, [rev["Decision"] == "Accept" for _, rev in pairs])
    overall = [float(rev["Overall"]) for _, rev in pairs]
    by_threshold = metrics(truth, [o >= threshold for o in overall])
    best_t, best = best_threshold(truth, overall)
    table = Table(title=f"calibration on {len(pairs)} of {len(labels)} labelled papers")
    for col in ("rule", "accuracy", "balanced accuracy", "F1", "FPR", "FNR"):
        table.add_column(col)
    rows = {"Decision": by_decision, f"Overall >= {threshold:g}": by_threshold,
            f"Overall >= {best_t:g} (best, in-sample)": best}
    for name, m in rows.items():
        table.add_row(name, *(f"{getattr(m, k):.3f}" for k in ("accuracy", "balanced_accuracy", "f1", "fpr", "fnr")))
    console.print(table)
    console.print("The AI Scientist's reviewer (GPT-4o) on 500 ICLR papers: balanced accuracy 0.65 (humans 0.66), "
                  "FPR 0.31, FNR 0.39.")
    # Undefined ratios (no positives, say) are NaN; JSON has no NaN, so they are written as null.
    report = {name: {k: (None if isinstance(v, float) and v != v else v) for k, v in vars(m).items()}
              for name, m in rows.items()}
    out.with_suffix(".calibration.json").write_text(json.dumps(report, indent=1))


def _literature_key(source: str | None) -> str | None:
    """The literature API's key (or OpenAlex's polite-pool e-mail), read from the environment only."""
    name = {"semantic-scholar": "S2_API_KEY", "openalex": "OPENALEX_MAILTO"}.get(source or "")
    return os.environ.get(name) if name else None


_SHORT = {"no significant difference": "n.s."}


def _print_summary(out_dir: Path) -> None:
    summary = json.loads((out_dir / "summary.json").read_text())
    metric = summary["metric"]["name"]
    table = Table(title=f"{summary['template']}: {metric} per idea ({summary['status']})")
    for col in ("idea", "status", "best mean ± s.e.", "95% CI", "vs baseline (Holm)", "runs"):
        table.add_column(col, no_wrap=col in ("best mean ± s.e.", "95% CI"))
    base = summary["baseline"]
    if base:
        table.add_row("baseline", "", f"{base['mean']:.4f} ± {base['stderr']:.4f}",
                      f"[{base['ci95'][0]:.4f}, {base['ci95'][1]:.4f}]", "", "")
    for i in summary["ideas"]:
        b = i["best"]
        if b is None:
            table.add_row(escape(i["name"]), "[red]failed[/red]", "", "", escape(i["reason"] or ""),
                          str(len(i["runs"])))
            continue
        m = b["metric"]
        c = m["comparison"]
        table.add_row(escape(i["name"]), i["status"], f"{m['mean']:.4f} ± {m['stderr']:.4f}",
                      f"[{m['ci95'][0]:.4f}, {m['ci95'][1]:.4f}]",
                      f"{_SHORT.get(c['verdict_holm'], c['verdict_holm'])} (p={c['p_value_holm']:.2g})",
                      str(len(i["runs"])))
    console.print(table)
    console.print(f"cost ${summary['cost_usd']:.4f} in {summary['llm_calls']} model calls; "
                  f"wall time {summary['wall_s']:.0f} s")
    console.print(f"results: {out_dir}/summary.json (per idea: {out_dir}/<idea>/run_*/final_info.json)")
    for i in summary["ideas"]:
        paper = i.get("paper")
        if paper and paper["status"] == "ok":
            console.print(f"paper: {paper['pdf']} ({paper.get('struck_sentences', '?')} struck sentences)")
            rev = i.get("review") or {}
            if "Overall" in rev:
                console.print(f"review: {rev['path']} (Overall {rev['Overall']}, {rev['Decision']})")
        elif paper:
            console.print(f"paper of {escape(i['name'])}: [red]{paper['status']}[/red]: "
                          f"{escape(paper.get('reason') or '')} (see {paper.get('tex')}; "
                          f"{paper.get('struck_sentences', '?')} struck sentences)")
    if summary["review"].startswith("skipped"):
        console.print(f"reviews: {summary['review']}; review a paper any time with `scientist review PAPER.pdf "
                      "--model ...`")
    if summary["status"] != "complete":
        console.print(f"[yellow]{summary['status']}:[/yellow] {escape(summary['reason'] or '')}; "
                      "run the same command again to resume")


sandbox_app = typer.Typer(no_args_is_help=True, help="The sandbox: build its Docker image, see which backend runs.")
app.add_typer(sandbox_app, name="sandbox")


@sandbox_app.command("build")
def sandbox_build(
    cuda: bool = typer.Option(False, "--cuda", help="The CUDA image (sandbox/Dockerfile.cuda) for NVIDIA GPUs."),
    base: str = typer.Option(None, "--base", help="Base image with python3 (default python:3.11-slim); a local "
                                                 "image serves sites without registry access."),
    tag: str = typer.Option(None, "--tag", help="Image name (default scientist-sandbox:cpu or :cuda)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if the image is up to date."),
    docker_host: str = DockerHostOpt,
) -> None:
    """Build the image the docker backend runs candidates in, through the Docker daemon."""
    from sandbox import container, image
    from sandbox.backends import CPU_IMAGE, CUDA_IMAGE

    tag = tag or (CUDA_IMAGE if cuda else CPU_IMAGE)
    try:
        client = container.connect(docker_host, timeout=600)
    except container.DockerUnavailable as e:
        _fail(f"{e}: start the daemon (dockerd) or point --docker-host at one")
    t0 = time.time()
    try:
        with console.status(f"building {tag}") as status:
            def say(line: str) -> None:
                line = " ".join(line.split())  # a multi-line RUN step on one line
                console.print(f"  {escape(line[:110])}", soft_wrap=True)
                status.update(f"building {tag}: {escape(line[:80])}")

            image_id = image.build(client, tag=tag, cuda=cuda, base=base or image.DEFAULT_BASE, force=force,
                                   say=say)
    except image.ImageError as e:
        _fail(str(e), 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    console.print(f"[green]ready:[/green] {tag} ({image_id[:19]}, {time.time() - t0:.0f} s); "
                  f"`--sandbox auto` runs candidates in it")


@sandbox_app.command("check")
def sandbox_check(
    sandbox: str = SandboxOpt,
    image: str = ImageOpt,
    gpus: str = GpusOpt,
    docker_host: str = DockerHostOpt,
) -> None:
    """Say which backend --sandbox would use here, and why; exit 2 when none can run."""
    sb = _sandbox(sandbox, image, gpus, docker_host)
    where = f" (image {sb.image})" if sb.backend == "docker" else ""
    console.print(f"sandbox: {sb.backend}{where}" + (f", GPUs {sb.gpus}" if sb.gpus else ""))


def _terminated(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM (a scheduler, `kill`): the same clean stop as Ctrl-C


def main() -> None:
    """Entry point with a last-resort guard: an unexpected error is one line, not a traceback."""
    signal.signal(signal.SIGTERM, _terminated)
    try:
        app()
    except Exception as e:  # noqa: BLE001
        err.print(f"[red]internal error:[/red] {type(e).__name__}: {e} (please report this)")
        raise SystemExit(70) from None
