"""The `scientist` command line: flags in, one validated configuration passed down, tables out.

Each command parses its flags, builds what the layer below needs (a template, a sandbox, a
RunConfig), dispatches, and prints with scientist.tables. Every expected failure is one line
and a non-zero exit: 1 when a run failed, 2 when the command could not start (bad template,
flag or file), 3 at a budget, 130 when interrupted; 70 is the last-resort guard's (main).
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import time
from pathlib import Path
from typing import get_args

import typer
from pydantic import ValidationError
from rich.markup import escape

from base.store import Store
from base.template import DEFAULT_TEMPLATES_DIR, Template, TemplateError, list_template_names, load_template
from sandbox.backends import Sandbox, SandboxUnavailable, resolve
from scientist import runner, tables
from scientist.config import Limits, Settings, flag_error
from scientist.executors import default_workers

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Research automation for small JAX experiment templates.")
console = tables.make_console()
err = tables.make_console(stderr=True)

# Absolute from here on: sandboxes mount folders under it and run elsewhere.
HomeOpt = typer.Option(Path(".scientist"), "--home", envvar="SCIENTIST_HOME", resolve_path=True,
                       show_default=".scientist", help="Folder for the store, caches and run folders.")
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
TestOpt = typer.Option("welch", "--test", help="Test against the baseline: welch, or paired (runs share seeds and "
                       "data, so seed-wise differences are tested).")
RetriesOpt = typer.Option(5, "--retries", help="Retries of a model call on rate limits, timeouts and 5xx.")
StructuredOpt = typer.Option("auto", "--structured",
                             help="JSON answers with the schema as response_format: auto (where the server takes "
                                  "one, probed once and remembered in the store), on (required) or off.")
MaxTokensOpt = typer.Option(None, "--max-tokens", show_default="the server's",
                            help="Most tokens per model answer (a local server may otherwise write up to its "
                                 "whole context).")
ExecutorOpt = typer.Option("local", "--executor", help="local (this machine) or ray (a Ray cluster).")
ProfileOpt = typer.Option(None, "--profile", show_default="gpu with --gpus, else cpu",
                          help="The template's [profiles.<name>] settings to run with (sizes, seeds, limits).")
RayAddressOpt = typer.Option(None, "--ray-address", show_default="a local Ray instance",
                             help="The Ray cluster to use with --executor ray, e.g. 10.0.0.1:6379.")


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _open_store(home: Path) -> Store:
    return Store(home / "store.sqlite")


def _load(name: str, templates_dir: Path, profile: str | None = None, gpus: str | None = None,
          computing: bool = False) -> Template:
    """The template, and for a command that computes runs, as this hardware (or --profile) runs it."""
    try:
        t = load_template(name, templates_dir)
        return t.for_hardware(profile, gpus) if computing else t
    except TemplateError as e:
        _fail(str(e))


def _seeds(template: Template, seeds: int | None) -> int:
    if seeds is None:
        return template.spec.seeds
    if seeds < 2:
        _fail("--seeds must be at least 2 (an interval needs two seeds)")
    return seeds


def _test(test: str) -> str:
    if test not in ("welch", "paired"):
        _fail(f"--test must be welch or paired, not {test!r}")
    return test


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


def _executor(kind: str, gpus: str | None, ray_address: str | None, workers: int = 1):
    """The --executor flags as an executor with `workers` slots (candidates computed at once)."""
    from scientist.executors import RayUnavailable, make_executor

    if kind not in ("local", "ray"):
        _fail(f"--executor must be local or ray, not {kind!r}")
    if ray_address is not None and kind != "ray":
        _fail("--ray-address needs --executor ray")
    try:
        return make_executor(kind, workers, gpus, ray_address)
    except RayUnavailable as e:
        _fail(str(e))


def _evaluate_all(requests: list[runner.EvalRequest], executor: runner.Executor | None,
                  test: str = "welch", workers: int = 1) -> int:
    """Evaluate the requests, up to `workers` at once, printing each line as it ends; then the table against the
    cached baseline, in the order the candidates were given (one Holm family over their comparisons)."""
    template, seeds, store = requests[0].template, requests[0].seeds, _open_store(requests[0].home)
    where = f"the {requests[0].sandbox.backend} sandbox" + (f", {workers} at once" if workers > 1 else "")
    what = requests[0].label if len(requests) == 1 else f"{len(requests)} candidates"

    def said(i: int, res: runner.EvalResult) -> None:
        ok, line = tables.eval_line(requests[i].label, res, template)
        (console if ok else err).print(line)

    with console.status(f"[bold]{escape(what)}[/bold]: training in {where}, then sealed evaluation"):
        try:
            done = runner.evaluate_many(requests, store, executor, workers, on_result=said)
        except KeyboardInterrupt:
            _fail("interrupted; the run is recorded as failed", 130)
        except RuntimeError as e:
            _fail(str(e))
    results = [(req.label, res) for req, res in zip(requests, done, strict=True)]
    baseline = runner.cached_baseline(store, template, seeds)
    table, tests = tables.results_table(template, results, baseline, test)
    console.print(table)
    if tests:
        console.print(tests)
    if baseline is None and requests[0].kind != "baseline":
        _no_baseline(template, seeds)
    return 0 if all(r.ok for _, r in results) else 1


def _no_baseline(template: Template, seeds: int) -> None:
    """Say that no baseline is cached for these settings, and the command that computes it (the profile and seeds
    named when they are not the defaults)."""
    flags = f" --profile {template.spec.profile}" if template.spec.profile not in (None, "cpu") else ""
    flags += f" --seeds {seeds}" if seeds != template.spec.seeds else ""
    console.print(f"no baseline cached for {seeds} seeds: run `scientist baseline --template {template.name}{flags}`"
                  " to compare against it")


def _cascade_all(requests: list[runner.EvalRequest], executor: runner.Executor | None,
                 test: str = "welch", workers: int = 1) -> int:
    """`eval --cascade`: screen the baseline and the candidates, print each decision with the rule, evaluate the
    promoted ones fully; then the table of full results, the screened-out candidates listed without a number."""
    from base.cascade import rule

    template, seeds, store = requests[0].template, requests[0].seeds, _open_store(requests[0].home)
    screen_seeds = runner.screen_request(requests[0]).seeds
    overlay = json.dumps(template.spec.screen.model_dump(exclude_defaults=True))
    console.print(escape(f"cascade: each candidate is screened first ({screen_seeds} seeds, the template's [screen]: "
                         f"{overlay}); {rule(template.spec.screen.margin)}. Here the bar is the baseline's "
                         "screen."))

    def screened(i: int, c: runner.Cascaded) -> None:
        ok, line = tables.screen_line(requests[i].label, c.screen, c.decision, template)
        (console if ok else err).print(line)

    def said(i: int, res: runner.EvalResult) -> None:
        ok, line = tables.eval_line(requests[i].label, res, template)
        (console if ok else err).print(line)

    with console.status(f"[bold]{len(requests)} candidate(s)[/bold]: screens, then the full evaluation of the "
                        "promoted"):
        try:
            _, done = runner.cascade_many(requests, template.editable_sources(), store, executor, workers,
                                          on_screen=screened, on_result=said)
        except KeyboardInterrupt:
            _fail("interrupted; the run is recorded as failed", 130)
        except RuntimeError as e:
            _fail(str(e))
    results = [(req.label, c.full) for req, c in zip(requests, done, strict=True) if c.full is not None]
    out = [req.label for req, c in zip(requests, done, strict=True) if c.decision and not c.decision.promoted]
    baseline = runner.cached_baseline(store, template, seeds)
    table, tests = tables.results_table(template, results, baseline, test, screened_out=out)
    console.print(table)
    if tests:
        console.print(tests)
    if baseline is None:
        _no_baseline(template, seeds)
    console.print(f"screens: {len(done)}, promoted: {len(results)}, screened out: {len(out)}")
    failed = any(c.decision is None for c in done) or not all(r.ok for _, r in results)
    return 1 if failed else 0


@app.command()
def templates(home: Path = HomeOpt, templates_dir: Path = TemplatesDirOpt) -> None:
    """List the templates with their metric, direction and whether a baseline is cached."""
    names = list_template_names(templates_dir)
    if not names:
        _fail(f"no templates found under {templates_dir}")
    store = _open_store(home)
    rows, bad = [], 0
    for name in names:
        try:
            t = load_template(name, templates_dir)
        except TemplateError as e:
            err.print(f"[red]error:[/red] {e}")
            bad += 1
            continue
        rows.append((t, runner.cached_baseline(store, t, t.spec.seeds)))
    console.print(tables.templates_table(rows))
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
    profile: str = ProfileOpt,
    docker_host: str = DockerHostOpt,
    force: bool = typer.Option(False, "--force", help="Recompute even if the same run is in the store."),
    test: str = TestOpt,
    workers: int = typer.Option(None, "--workers", show_default="one per GPU given, else 1",
                                help="Candidates computed at once, each on its own share of the machine (or Ray)."),
    executor: str = ExecutorOpt,
    ray_address: str = RayAddressOpt,
    cascade: bool = typer.Option(False, "--cascade/--no-cascade",
                                 help="Screen the baseline and each candidate first with the template's [screen]; "
                                      "only candidates whose screen is not significantly worse than the "
                                      "baseline's are evaluated fully."),
    home: Path = HomeOpt,
    templates_dir: Path = TemplatesDirOpt,
) -> None:
    """Evaluate candidates through the sandbox and the sealed evaluator; print metric and interval."""
    t = _load(template, templates_dir, profile, gpus, computing=True)
    if cascade and t.spec.screen is None:
        _fail(escape(f"template {t.name} declares no [screen], which --cascade needs (a cheaper overlay of its "
                     "settings: seeds, config; docs/templates.md)"))
    n = _seeds(t, seeds)
    test = _test(test)
    try:
        cands = [(p.stem, t.read_candidate(p)) for p in candidate] if candidate else [("shipped",
                                                                                       t.editable_sources())]
    except TemplateError as e:
        _fail(str(e))
    sb = _sandbox(sandbox, image, gpus, docker_host)
    requests = runner.eval_requests(t, cands, seeds=n, sandbox=sb, home=home, out=out, force=force)
    if workers is not None and workers < 1:
        _fail("--workers must be at least 1")
    workers = min(len(requests), workers or default_workers(gpus))
    run = _cascade_all if cascade else _evaluate_all
    raise typer.Exit(run(requests, _executor(executor, gpus, ray_address, workers), test, workers))


@app.command()
def baseline(
    template: str = TemplateOpt,
    seeds: int = SeedsOpt,
    sandbox: str = SandboxOpt,
    image: str = ImageOpt,
    gpus: str = GpusOpt,
    profile: str = ProfileOpt,
    docker_host: str = DockerHostOpt,
    force: bool = typer.Option(False, "--force", help="Recompute even if cached."),
    executor: str = ExecutorOpt,
    ray_address: str = RayAddressOpt,
    home: Path = HomeOpt,
    templates_dir: Path = TemplatesDirOpt,
) -> None:
    """Compute the template's baseline (its shipped editable files) once per content hash."""
    t = _load(template, templates_dir, profile, gpus, computing=True)
    n = _seeds(t, seeds)
    sb = _sandbox(sandbox, image, gpus, docker_host)
    requests = runner.eval_requests(t, [("baseline", t.editable_sources())], seeds=n, sandbox=sb, home=home,
                                    out=None, force=force, kind="baseline")
    raise typer.Exit(_evaluate_all(requests, _executor(executor, gpus, ray_address)))


@app.command()
def runs(
    template: str = typer.Option(None, "--template", "-t", help="Only this template's runs."),
    home: Path = HomeOpt,
) -> None:
    """List the runs recorded in the store."""
    console.print(tables.runs_table(_open_store(home).runs(template), home / "store.sqlite"))


def _settings_options() -> list[inspect.Parameter]:
    """One option per Settings field (a [budget] field as --budget-<name>), with its default and help."""
    fields = [(name, f) for name, f in Settings.model_fields.items() if name != "budget"]
    fields += [(f"budget_{name}", f) for name, f in Limits.model_fields.items()]
    params = []
    for name, field in fields:
        flag = "--" + name.replace("_", "-")
        kinds = [a for a in get_args(field.annotation) if a is not type(None)] or [field.annotation]
        kind = next((k for k in (bool, int, float) if k in kinds), str)  # a Literal is checked by Settings
        decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag, *SHORT_FLAGS.get(name, ())]
        option = typer.Option(field.default, *decls, help=field.description, show_default=field.default is not None)
        params.append(_kw(name, kind if kind is bool else kind | None, option))
    return params


def _kw(name: str, annotation: object, option: object) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)


SHORT_FLAGS = {"model": ("-m",)}


def _settings(flags: dict) -> Settings:
    """The run flags as Settings (None: left to Settings, which fills proposer and writer from the model)."""
    given = {k: v for k, v in flags.items() if v is not None}
    budget = {k.removeprefix("budget_"): given.pop(k) for k in list(given) if k.startswith("budget_")}
    return Settings(**given, budget=budget)


def run(template: str, out: Path | None, log_json: bool, docker_host: str | None, home: Path,
        templates_dir: Path, **flags) -> None:
    """Propose ideas, run their experiments in the sandbox, score them sealed; resumable, within budget."""
    from scientist import session
    from scientist.progress import JsonReporter, RichReporter

    try:
        settings = _settings(flags)
    except ValidationError as e:
        _fail(flag_error(e))
    t = _load(template, templates_dir, settings.profile, settings.gpus, computing=True)
    if settings.writeup:
        _check_latex()  # before anything is computed or paid for
    backend = _sandbox(settings.sandbox, settings.image, settings.gpus, docker_host)
    slug = settings.proposer if settings.proposer != "llm" or not settings.model else \
        settings.model.replace("/", "_")
    store = _open_store(home)
    try:
        cfg = session.run_config(settings, t, backend, home=home.resolve(),
                                 out_dir=(out or home / "runs" / t.name / slug).resolve(),
                                 literature_key=_literature_key(settings.literature))
        session.check_can_start(cfg, store)
    except ValidationError as e:
        _fail(escape(flag_error(e)))
    except session.CannotStart as e:
        _fail(escape(str(e)))
    report = JsonReporter() if log_json else RichReporter(console)
    code, summary = session.run_session(cfg, store, report)
    report.close()
    if not log_json:
        tables.print_session(console, summary, cfg.out_dir)
    raise typer.Exit(code)


run.__signature__ = inspect.Signature([  # typer reads the options from here: the settings' own, and these
    _kw("template", str, TemplateOpt), *_settings_options(),
    _kw("out", Path | None, typer.Option(None, "--out", show_default=".scientist/runs/<template>/<proposer or model>",
                                         help="Output folder; running the same command again resumes it.")),
    _kw("log_json", bool, typer.Option(False, "--log-json", help="Progress as JSON lines on stdout.")),
    _kw("docker_host", str | None, DockerHostOpt), _kw("home", Path, HomeOpt),
    _kw("templates_dir", Path, TemplatesDirOpt),
])
app.command()(run)


def _literature_key(source: str | None) -> str | None:
    """The literature API's key (or OpenAlex's polite-pool e-mail), read from the environment only."""
    name = {"semantic-scholar": "S2_API_KEY", "openalex": "OPENALEX_MAILTO"}.get(source or "")
    return os.environ.get(name) if name else None


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
    retries: int = RetriesOpt,
    home: Path = HomeOpt,
    templates_dir: Path = TemplatesDirOpt,
) -> None:
    """(Re)write the papers of a finished run from its logged results, without re-running experiments."""
    from base.llm import BudgetExceeded, LLMError
    from scientist.writeup import NotARunDir, RunFilesMissing, finished_run, write_papers, writer_llm

    try:
        chosen = Settings(writer=writer, model=model, api_base=api_base, retries=retries)
        summary, t = finished_run(run_dir, templates_dir, idea)
    except ValidationError as e:
        _fail(flag_error(e))
    except NotARunDir as e:
        _fail(escape(str(e)))
    _check_latex()
    store = _open_store(home)
    try:
        llm = writer_llm(chosen.model_spec(), store, run_dir, t) if chosen.writer == "llm" else None
    except LLMError as e:
        _fail(str(e))
    try:
        with console.status("writing papers"):
            papers = write_papers(summary, run_dir, t, llm=llm, store=store, idea=idea)
    except (LLMError, BudgetExceeded, RunFilesMissing) as e:
        _fail(str(e), 1)
    written = [(i.name, i.paper) for i in summary.ideas if i.paper is not None and (idea is None or i.name == idea)]
    console.print(tables.papers_table(run_dir, written))
    raise typer.Exit(0 if all(p.status == "ok" for p in papers) else 1)


@app.command()
def review(
    papers: list[Path] = typer.Argument(None, help="PDF files (or papers as .txt/.md) to review."),
    model: str = typer.Option("openai/gpt-4o", "--model", "-m", help="Any litellm model string."),
    api_base: str = typer.Option(None, "--api-base", help="OpenAI-compatible server URL."),
    protocol: str = typer.Option("ai-scientist", "--protocol",
                                 help="ai-scientist (The AI Scientist's procedure: 5 reviews, meta-review, "
                                      "reflections on it) or ensemble (each review reflected); docs/reviewer.md."),
    ensemble: int = typer.Option(5, "--ensemble", help="Independent reviews per paper."),
    reflections: int = typer.Option(None, "--reflections", show_default="4 (ai-scientist), 5 (ensemble)",
                                    help="Reflection rounds (on the meta-review with ai-scientist, on each review "
                                         "with ensemble)."),
    temperature: float = typer.Option(None, "--temperature", show_default="0.1 (ai-scientist), 0.75 (ensemble)",
                                      help="Temperature (> 0) of the meta-review and reflections (ai-scientist; "
                                           "its reviews are drawn at 0.75) or of every call (ensemble)."),
    fewshot: list[Path] = typer.Option(None, "--fewshot", help="Example paper (.pdf/.txt) with its review as .json "
                                                               "beside it (repeatable; default: the shipped one)."),
    no_fewshot: bool = typer.Option(False, "--no-fewshot", help="Review without an example."),
    out: Path = typer.Option(Path("reviews.jsonl"), "--out", help="One JSON line per paper."),
    concurrency: int = typer.Option(4, "--concurrency", help="Papers reviewed at once."),
    run_dir: Path = typer.Option(None, "--run-dir", help="The scientist run folder the papers come from."),
    calibrate: Path = typer.Option(None, "--calibrate", help="CSV of paper,label (accept/reject): report accuracy."),
    threshold: float = typer.Option(6.0, "--threshold", help="Overall score at or above which a paper counts as "
                                                             "accepted, for --calibrate."),
    max_chars: int = typer.Option(None, "--max-chars", show_default="no cut (ai-scientist), 60000 (ensemble)",
                                  help="Paper text beyond this many characters is cut, with a note."),
    retries: int = RetriesOpt,
    structured: str = StructuredOpt,
    max_tokens: int = MaxTokensOpt,
    budget_usd: float = typer.Option(None, "--budget-usd", help="Stop reviewing after spending this much."),
    home: Path = HomeOpt,
) -> None:
    """Review PDFs with the NeurIPS form: ensemble, reflections, area-chair meta-review, injection guard."""
    from rich.progress import Progress

    from base.llm import LLMError
    from reviewer.batch import JsonLines, ReviewRequest, review_batch
    from reviewer.calibrate import calibrate as calibration
    from reviewer.calibrate import calibration_json, load_labels
    from reviewer.review import ReviewSettings, default_fewshot

    labels: list[tuple[Path, bool]] = []
    try:
        labels = load_labels(calibrate) if calibrate is not None else []
    except (OSError, ValueError) as e:
        _fail(f"{calibrate}: {e}")
    try:
        req = ReviewRequest(papers=[p for p, _ in labels] or papers or [], model=model, api_base=api_base,
                            retries=retries, structured=structured, max_tokens=max_tokens, concurrency=concurrency,
                            budget_usd=budget_usd, run_dir=run_dir, max_chars=max_chars)
        settings = ReviewSettings(ensemble=ensemble, reflections=reflections, temperature=temperature,
                                  fewshot=() if no_fewshot else tuple(fewshot or default_fewshot()),
                                  protocol=protocol)
        req.model_spec().check()
    except ValidationError as e:
        _fail(flag_error(e))
    except (ValueError, LLMError) as e:
        _fail(str(e))
    lines = JsonLines(out)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"reviewing {len(req.papers)} paper(s)", total=len(req.papers))

        def done(res: dict) -> None:
            lines.append(res)
            if res["status"] != "ok":
                err.print(f"[red]✗[/red] {escape(res['paper'])}: {escape(res['error'] or '')}")
            progress.advance(task)

        results = review_batch(req, settings, _open_store(home), on_result=done)
    console.print(tables.reviews_table(results, out))
    if labels:
        rows = calibration(labels, results, threshold)
        if not rows:
            err.print("[red]error:[/red] no paper could be reviewed, so there is nothing to calibrate")
        else:
            console.print(tables.calibration_table(rows, sum(r["status"] == "ok" for r in results), len(labels)))
            out.with_suffix(".calibration.json").write_text(json.dumps(calibration_json(rows), indent=1))
    raise typer.Exit(0 if all(r["status"] == "ok" for r in results) else 1)


@app.command()
def nightly(
    campaign_file: Path = typer.Argument(..., help="The campaign file (TOML): everything the night needs."),
    log_json: bool = typer.Option(False, "--log-json", help="Progress as JSON lines on stdout."),
    home: Path = HomeOpt,
) -> None:
    """One night of a campaign, for cron: search, confirm new bests on fresh seeds, write the digest.

    Never prompts. Exit codes:

    \b
      0    the night ran, to its end or its budget
      1    it stopped on an error (printed and stored)
      2    the campaign file or the machine cannot run it
      4    another night of the campaign is running
      70   an internal error (please report it)
      130  interrupted
    """
    from scientist import campaign as cp
    from scientist.nightly import run_night
    from scientist.progress import JsonReporter, RichReporter
    from scientist.session import CannotStart

    try:
        c = cp.load_campaign(campaign_file)
    except cp.CampaignError as e:
        _fail(escape(str(e)))
    try:
        template = cp.load_night_template(c)
    except cp.CampaignError as e:
        _fail(escape(f"{campaign_file}: field 'template': {e}"))
    if c.writeup:
        _check_latex()
    sandbox = _sandbox(c.sandbox, c.image, c.gpus, None)
    report = JsonReporter() if log_json else RichReporter(console)
    try:
        night = run_night(c, template, sandbox, home.resolve(), report)
    except cp.NightRunning as e:
        _fail(f"campaign {c.name}: {e}", cp.EXIT_LOCKED)
    except CannotStart as e:
        _fail(escape(f"{campaign_file}: {e}"))
    except cp.CampaignError as e:
        _fail(escape(str(e)), 1)
    finally:
        report.close()
    if not log_json:
        tables.print_session(console, night.summary, night.night.out_dir)
        for conf in night.confirmed:
            console.print(tables.confirmation_line(conf, template))
    pages = night.pages
    console.print(f"digest: {pages.markdown}\n        {pages.html}\nindex:  {pages.index}")
    if night.announce_problem:
        err.print(f"[yellow]warning:[/yellow] {escape(night.announce_problem)}")
    raise typer.Exit(night.code)


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A folder written by scientist run."),
    home: Path = typer.Option(None, "--home", show_default="the run's own --home",
                              help="Where the store is, for the compute hours."),
) -> None:
    """Write RUN_DIR/report.md and RUN_DIR/report.html: leaderboard with intervals, the best's code diff, cost,
    failures by reason, links to papers and reviews (one self-contained HTML file)."""
    from scientist.digest import DigestError, write_report

    try:
        md, html = write_report(run_dir, home=home)
    except DigestError as e:
        _fail(escape(str(e)))
    console.print(f"report: {md}\n        {html}")


campaign_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                           help="Campaigns: their leaderboards and nights.")
app.add_typer(campaign_app, name="campaign")


@campaign_app.command("list")
def campaign_list(home: Path = HomeOpt) -> None:
    """Every campaign of this home: template, nights, the confirmed best."""
    from scientist import campaign as cp
    from scientist import campaign_store as records

    store = _open_store(home)
    rows = records.campaigns(store)
    console.print(tables.campaigns_table([(row, cp.current_best(store, row["name"])) for row in rows]))


@campaign_app.command("show")
def campaign_show(name: str = typer.Argument(..., help="The campaign's name."), home: Path = HomeOpt) -> None:
    """A campaign's leaderboard of confirmed results, and its nights."""
    from scientist import campaign as cp
    from scientist import campaign_store as records

    store = _open_store(home)
    nights = records.nights(store, name)
    if not nights:
        known = ", ".join(r["name"] for r in records.campaigns(store)) or "none"
        _fail(f"no campaign {name!r} in {home / 'store.sqlite'} (campaigns: {known})")
    console.print(tables.leaderboard_table(name, cp.leaderboard(store, name)))
    console.print(tables.nights_table(nights))


sandbox_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                          help="The sandbox: build its Docker image, see which backend runs.")
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
