"""The ``gatekeeper`` command.

Exit codes (``gatekeeper.errors.ExitCode``): 0 every required gate passed,
1 a required gate failed, 2 a usage or bundle error, 3 an internal error.
A user error prints one line, never a traceback (set GATEKEEPER_DEBUG=1 for one).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from pathlib import Path

from gatekeeper._util.text import first_line, quote, shorten
from gatekeeper.errors import ExitCode, GatekeeperError, GatekeeperWarning


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _stdout_console():
    """Where results go; in a CI log (not a terminal) tables get room instead of rich's 80 columns."""
    from rich.console import Console

    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 140
    return Console(width=width, highlight=False)


def cmd_gates_list(args) -> int:
    from rich.console import Console
    from rich.table import Column, Table

    from gatekeeper.gating.registry import available_gates

    table = Table(Column("gate", no_wrap=True), "parameters", "description", "module")
    for info in available_gates():
        params = ", ".join(
            f"{n}={p.default!r}" if p.default is not p.empty else n for n, p in info.parameters.items()
        )
        table.add_row(info.name, params, info.description, info.source)
    Console().print(table)
    return ExitCode.PASSED


def cmd_check(args) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from gatekeeper.check import prepare, run_check

    console = _console()
    serving = {"runtime": args.runtime, "openai.base_url": args.base_url, "openai.base_model": args.base_model,
               "openai.adapter_model": args.adapter_model, "openai.api_key_env": args.api_key_env}
    prepared = prepare(args.bundle, device=args.device, allow_unsigned=args.allow_unsigned, serving=serving)
    manifest = prepared.bundle.manifest
    console.print(f"checking [bold]{manifest.name} v{manifest.version}[/] on base {manifest.base.ref} "
                  f"({len(prepared.gates)} gates, {prepared.runtime.name} runtime)")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False, disable=args.quiet) as progress:
        def phase(label: str, total: int):
            task = progress.add_task(label, total=total)
            return lambda n: progress.advance(task, n)

        verdict, paths = run_check(prepared, Path(args.out) if args.out else None,
                                   use_cache=not args.no_cache, report_phase=phase)
    _print_summary(verdict)
    print(f"report: {paths['report.html']}")
    return verdict.exit_code


def _print_summary(verdict) -> None:
    from rich.table import Table

    table = Table("gate", "status", "kind", "metric", "base", "adapter", "delta", "rule", title="gatekeeper verdict")
    for result in verdict.gates:
        style = {"passed": "green", "failed": "red", "skipped": "dim", "error": "yellow"}[result.status]
        head = result.metrics[0] if result.metrics else None
        fmt = lambda x: "—" if x is None else f"{x:.3f}"  # noqa: E731
        table.add_row(
            result.name, f"[{style}]{result.status}[/]", "required" if result.required else "advisory",
            head.name if head else "", fmt(head.base) if head else "", fmt(head.adapter) if head else "",
            fmt(head.delta) if head else "", result.rule or result.error or result.skip_reason or "",
        )
    console = _stdout_console()
    console.print(table)
    word = "[green]PASS[/]" if verdict.passed else "[red]FAIL[/]"
    console.print(f"verdict: {word} (exit code {verdict.exit_code})")


def cmd_diff(args) -> int:
    from gatekeeper.report.render import write_diff_html
    from gatekeeper.verdict.diff import diff_verdicts
    from gatekeeper.verdict.files import read_verdict

    diff = diff_verdicts(read_verdict(args.a), read_verdict(args.b))
    default = Path("reports") / "diffs" / f"{_slug(diff.label_a)}--{_slug(diff.label_b)}.html"
    path = write_diff_html(diff, Path(args.html) if args.html else default)
    _print_diff(diff)
    print(f"diff: {path}")
    return ExitCode.PASSED


def _slug(label: str) -> str:
    return label.replace(" ", "-")


FLIPS_SHOWN = 20  # per gate in the terminal; the HTML diff lists them all


def _print_diff(diff) -> None:
    from rich.table import Table

    console = _stdout_console()
    fmt = lambda x, sign="": "—" if x is None else f"{x:{sign}.3f}"  # noqa: E731
    console.print(f"[bold]A[/] = {diff.label_a} ({diff.a.bundle.path})\n[bold]B[/] = {diff.label_b} ({diff.b.bundle.path})")
    for warning in diff.warnings:
        console.print(f"[yellow]note:[/] {warning}")

    table = Table("gate", "metric", "base", "A", "B", "B − A", "status A → B", title="what changed, B against A")
    for gate in diff.gates:
        status = gate.status_a if gate.status_a == gate.status_b else f"[bold]{gate.status_a} → {gate.status_b}[/]"
        for k, m in enumerate(gate.metrics or [None]):
            if m is None:
                table.add_row(gate.gate, "", "", "", "", "", status)
                continue
            base = fmt(m.base_a) if m.base_a == m.base_b else f"{fmt(m.base_a)} / {fmt(m.base_b)}"
            style = {"better": "green", "worse": "red"}.get(m.direction, "")
            change = f"[{style}]{fmt(m.change, '+')}[/]" if style else fmt(m.change, "+")
            table.add_row(gate.gate if k == 0 else "", m.metric, base, fmt(m.a), fmt(m.b), change, status if k == 0 else "")
    console.print(table)

    for gate in diff.gates:
        if not gate.has_outcomes:
            continue
        heading = (f"{gate.gate}: {len(gate.flips)} of {gate.compared} items changed outcome, "
                   f"{len(gate.fixed)} right only in B, {len(gate.broken)} right only in A "
                   f"(exact McNemar p={gate.p_value:.3g})")
        console.print(heading)
        if not gate.flips:
            continue
        flips = Table("item", "A", "B", "the wrong answer, where the evidence shows it")
        for flip in gate.flips[:FLIPS_SHOWN]:
            wrong = flip.b if flip.a_ok else flip.a
            flips.add_row(flip.item, "right" if flip.a_ok else "wrong", "right" if flip.b_ok else "wrong",
                          "—" if wrong is None else repr(wrong.adapter_output))
        console.print(flips)
        if len(gate.flips) > FLIPS_SHOWN:
            console.print(f"… and {len(gate.flips) - FLIPS_SHOWN} more in the HTML diff")

    changed = [row for row in diff.lineage if row.changed]
    if changed:
        lineage = Table("", "A", "B", title="how the candidates differ", title_justify="left")
        short = lambda text: text[:12] + "…" if len(text) == 64 else text  # noqa: E731  (a sha256)
        for row in changed:
            lineage.add_row(row.field, short(row.a), short(row.b))
        console.print(lineage)


@contextlib.contextmanager
def _interrupt_on_sigterm():
    """Inside the block a kill (SIGTERM) unwinds like Ctrl-C, so staging directories are cleaned up."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _train_with_progress(recipe, root: Path, console, quiet: bool, **kwargs):
    """Train with a progress bar: step of total, loss, validation loss when measured, tokens/s."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from gatekeeper.training.loop import train

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[stats]}"))
    with Progress(*columns, console=console, disable=quiet) as progress:
        task = progress.add_task(f"train r={recipe.rank}" if recipe.rank else f"train {recipe.method}", total=None, stats="")

        def on_step(info):
            val = f" val {info.val_loss:.4f}" if info.val_loss is not None else ""
            progress.update(task, completed=info.step, total=info.total,
                            stats=f"loss {info.loss:.4f}{val} · {info.tokens_per_second:.0f} tok/s")

        return train(recipe, root, on_step, **kwargs)


def cmd_train(args) -> int:
    from gatekeeper.bundle.recipe import load_recipe
    from gatekeeper.training import checkpoint
    from gatekeeper.training.versions import write_candidate

    recipe, root = load_recipe(args.recipe)
    console = _console()
    work = checkpoint.work_dir(recipe, root)
    verb = "resuming" if args.resume else "training"
    rank = f", rank {recipe.rank}" if recipe.rank else ""
    parent = f", parent {recipe.parent}" if recipe.parent else ""
    console.print(f"{verb} [bold]{recipe.name}[/] ({recipe.method}{rank}{parent}) on {recipe.base}")
    with _interrupt_on_sigterm():
        result = _train_with_progress(recipe, root, console, args.quiet, checkpoints=work, resume=args.resume)
        path = write_candidate(result, recipe, root)
    checkpoint.discard(work)  # the version exists now; its checkpoints have served
    record = result.record
    console.print(f"best validation loss {record['best_val_loss']:.4f} at step {record['best_step']} "
                  f"of {record['steps']} ({record['wall_seconds']:.0f} s)")
    print(path)
    return ExitCode.PASSED


def cmd_inspect(args) -> int:
    from gatekeeper.report.inspect_text import print_inspection
    from gatekeeper.training.inspect import inspect_path

    if args.examples < 0:
        raise GatekeeperError(f"--examples expects 0 or more, got {args.examples}")
    inspection = inspect_path(args.target, examples=args.examples)  # every check before anything is written
    page = None
    if args.html:
        from gatekeeper.report.render import write_inspect_html

        try:
            page = write_inspect_html(inspection, Path(args.html))
        except OSError as exc:
            raise GatekeeperError(f"{args.html}: cannot write the page ({first_line(exc)})") from None
    print_inspection(inspection, _stdout_console())
    if page is not None:
        print(f"html: {page}")
    # like check: 1 when what it looked at would not pass, here training's length check
    return ExitCode.GATE_FAILED if inspection.refused else ExitCode.PASSED


def cmd_init(args) -> int:
    from gatekeeper.bundle.adopt import adopt_adapter
    from gatekeeper.bundle.manifest import PromptTemplate

    golden = {"eval": args.eval} | {n: p for n, p in (("train", args.train), ("validation", args.validation)) if p}
    for item in args.set or []:
        set_name, sep, path = item.partition("=")
        if not sep or not set_name or not path:
            raise GatekeeperError(f"--set expects NAME=PATH, got {quote(item)}")
        if set_name in golden or set_name in ("eval", "train", "validation"):
            raise GatekeeperError(f"--set {set_name}: given twice (eval, train and validation have their own options)")
        golden[set_name] = path
    adopted = adopt_adapter(args.adapter, base=args.base, golden=golden, contract=args.contract, name=args.name,
                            prompt=PromptTemplate(system=args.system, user=args.user), out=args.out)
    manifest = adopted.manifest
    console = _console()
    console.print(f"[bold]{manifest.name} v{manifest.version}[/]: {manifest.adapter.method} adapter on "
                  f"{adopted.layers} layers, base {manifest.base.ref}, golden sets {', '.join(manifest.golden_sets)}")
    console.print(f"gates: {', '.join(g.name for g in manifest.gates)}; edit them in {adopted.path / 'bundle.yaml'}, "
                  f"then sign it again with `gatekeeper sign {adopted.path}`")
    print(adopted.path)
    return ExitCode.PASSED


def cmd_sign(args) -> int:
    from gatekeeper.bundle.loading import load_bundle
    from gatekeeper.bundle.signing import sign_bundle

    bundle = load_bundle(args.bundle)  # a manifest is signed only while every file it names has its hash
    print(f"{bundle.root}: signed with key {sign_bundle(bundle.root)}")
    return ExitCode.PASSED


def cmd_sweep(args) -> int:
    from rich.table import Table

    from gatekeeper.bundle.recipe import load_recipe
    from gatekeeper.check import prepare, run_check
    from gatekeeper.sweep import COLUMNS, RANK, apply, grid, parse_axis, parse_ranks, region_of, row_for, write_outputs
    from gatekeeper.training.methods import get_method
    from gatekeeper.training.versions import write_candidate

    # Every axis and every point before anything loads: a typo costs nothing.
    axes = [parse_axis(text) for text in args.set or []]
    if args.rank is not None:
        axes.insert(0, (RANK, parse_ranks(args.rank)))
    if not axes:
        raise GatekeeperError("sweep needs something to vary: --set FIELD=V1,V2 (any recipe field) or --rank 4,8")
    recipe, root = load_recipe(args.recipe)
    points = grid(axes)
    recipes = [apply(recipe, point, Path(args.recipe)) for point in points]
    for variant in recipes:  # a rank or module list the base cannot take costs seconds, not a run
        method = get_method(variant.method)
        if method.preflight is not None:
            method.preflight(variant, root)
    out = Path(args.out) if args.out else Path("reports") / f"sweep-{recipe.name}"
    width = len(str(len(points)))
    console = _console()
    rows, region = [], None
    for index, (point, variant) in enumerate(zip(points, recipes), 1):
        console.print(f"[bold]{recipe.name}[/] point {index}/{len(points)}: {point.label}")
        with _interrupt_on_sigterm():
            bundle = write_candidate(_train_with_progress(variant, root, console, args.quiet), variant, root)
        report = out / f"p{index:0{width}d}"
        verdict, _ = run_check(prepare(bundle, device=args.device), report)
        rows.append(row_for(point, bundle, verdict, report))
        region = region or region_of(verdict)
        console.print(f"  {bundle}: {rows[-1].verdict}")
    paths = write_outputs(rows, region, out, recipe.name, recipe.method)
    table = Table("#", *COLUMNS, title=f"{recipe.name}: sweep over {', '.join(name for name, _ in axes)}")
    for index, row in enumerate(rows, 1):
        values = (getattr(row, c) for c in COLUMNS)
        table.add_row(str(index), *("—" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v) for v in values))
    _stdout_console().print(table)
    print(f"sweep: {paths['csv']} {paths['svg']}")
    # like check: 0 when some point passes its gates, 1 when none does
    return ExitCode.PASSED if any(r.verdict == "pass" for r in rows) else ExitCode.GATE_FAILED


def cmd_verify(args) -> int:
    from gatekeeper.bundle.loading import load_bundle
    from gatekeeper.bundle.signing import verify_signature
    from gatekeeper.errors import BundleError

    bundle = load_bundle(args.bundle)  # every artifact hash, naming the file that differs
    status = verify_signature(bundle.root)
    if not status.ok:
        raise BundleError(status.detail)
    files = len(bundle.manifest.file_refs())
    print(f"{bundle.root}: {files} artifact hashes match; {status.detail}")
    return ExitCode.PASSED


def cmd_promote(args) -> int:
    from gatekeeper.release.channels import promote

    print(promote(Path(args.bundle), args.channel))
    return ExitCode.PASSED


def cmd_rollback(args) -> int:
    from gatekeeper.release.channels import rollback

    print(rollback(args.name, _version_number(args.to), Path(args.store), replay=not args.no_replay, device=args.device))
    return ExitCode.PASSED


def _version_number(text: str) -> int:
    digits = text[1:] if text.lower().startswith("v") else text
    if not digits.isdigit():
        raise GatekeeperError(f"--to expects a version like v3, got {text!r}")
    return int(digits)


def cmd_history(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from gatekeeper.release.store import VersionStore, VersionStoreError

    with VersionStore(Path(args.store), create=False) as store:
        versions = store.versions(args.name)
        if not versions:
            raise VersionStoreError(f"no versions of {args.name!r} in {args.store}")
        table = Table("version", "method", "parent", "channel", "latest verdict", "signature", "registered",
                      title=f"{args.name}: versions")
        lineage = []  # parent -> child, for versions of this name on either side
        for number in versions:
            row = store.version(args.name, number)
            verdict = store.latest_verdict(args.name, number)
            word = "none" if verdict is None else ("pass" if verdict["passed"] else f"fail (exit {verdict['exit_code']})")
            method, parent = store.lineage(args.name, number) or ("—", None)  # registered before lineage was kept
            if parent is not None:
                lineage.append(f"{parent} → {args.name} v{number}")
            table.add_row(f"v{number}", method, str(parent) if parent else "", row.channel, word, row.signature,
                          row.registered_at)
        lineage += [f"{args.name} v{parent} → {child} v{version}" for parent, child, version in store.children(args.name)]
        verdicts = Table("when", "version", "verdict", "verdict sha256", title="verdicts")
        for verdict in store.verdicts(args.name):
            word = "pass" if verdict["passed"] else f"fail (exit {verdict['exit_code']})"
            verdicts.add_row(verdict["recorded_at"], f"v{verdict['version']}", word, verdict["verdict_sha256"][:12])
        events = Table("when", "version", "action", "from", "to", "who", title="events")
        for event in store.events(args.name):
            events.add_row(event["at"], f"v{event['version']}", event["action"], event["channel_from"] or "",
                           event["channel_to"] or "", event["actor"])
    console = Console()
    console.print(table)
    if lineage:
        console.print("lineage (parent → child): " + "; ".join(lineage))
    console.print(verdicts)
    console.print(events)
    return ExitCode.PASSED


def cmd_schema(args) -> int:
    import json

    from gatekeeper.bundle.manifest import Bundle
    from gatekeeper.bundle.recipe import Recipe
    from gatekeeper.verdict.model import Verdict

    model = {"bundle": Bundle, "recipe": Recipe, "verdict": Verdict}[args.document]
    print(json.dumps(model.model_json_schema(), indent=2, sort_keys=True))
    return ExitCode.PASSED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gatekeeper", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="run a bundle's gates; exit 0 pass, 1 fail, 2 bad input, 3 internal error")
    check.add_argument("bundle", help="bundle directory (holding bundle.yaml)")
    check.add_argument("--out", help="report directory (default: reports/<name>/v<N>)")
    check.add_argument("--device", help="override the bundle's serving device (cpu, cuda)")
    check.add_argument("--no-cache", action="store_true", help="ignore cached responses and run the model")
    check.add_argument("--allow-unsigned", action="store_true", help="accept a bundle that carries no signature")
    check.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    engine = check.add_argument_group("serving engine", "override the bundle's serving section")
    engine.add_argument("--runtime", choices=["hf", "openai", "vllm"],
                        help="hf: in-process transformers (the reference); openai: a running OpenAI-compatible "
                             "server; vllm: vLLM in-process (GPU)")
    engine.add_argument("--base-url", help="openai: the server's URL up to /v1, e.g. http://127.0.0.1:8000/v1")
    engine.add_argument("--base-model", help="openai: the served model name of the base")
    engine.add_argument("--adapter-model", help="openai: the served model name of the adapter")
    engine.add_argument("--api-key-env", help="openai: the environment variable that holds the API key")
    check.set_defaults(func=cmd_check)

    diff = sub.add_parser("diff", help="compare two candidates: gates, metrics and the items whose outcome flipped")
    diff.add_argument("a", help="candidate A: verdict.json, a report directory, or a checked bundle")
    diff.add_argument("b", help="candidate B: same kinds as A")
    diff.add_argument("--html", help="where to write the side-by-side HTML (default: reports/diffs/<A>--<B>.html)")
    diff.set_defaults(func=cmd_diff)

    verify = sub.add_parser("verify", help="check a bundle's signature and every artifact hash")
    verify.add_argument("bundle")
    verify.set_defaults(func=cmd_verify)

    train = sub.add_parser("train", help="train a candidate from a recipe into <dir>/v<N>")
    train.add_argument("recipe", help="recipe.yaml")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint in <dir>/.work")
    train.add_argument("-q", "--quiet", action="store_true")
    train.set_defaults(func=cmd_train)

    inspect = sub.add_parser("inspect", help="what training sees, before it trains: examples token by token "
                                             "with the loss-carrying tokens marked, lengths, over-long examples")
    inspect.add_argument("target", metavar="RECIPE|BUNDLE", help="recipe.yaml, or a bundle directory (bundle.yaml)")
    inspect.add_argument("--examples", type=int, default=3, metavar="N",
                         help="training examples shown token by token (default 3)")
    inspect.add_argument("--html", metavar="PATH", help="also write the same as one self-contained HTML page")
    inspect.set_defaults(func=cmd_inspect)

    init = sub.add_parser("init", help="take in a peft LoRA adapter trained elsewhere as a signed bundle")
    init.add_argument("adapter", help="peft adapter directory (adapter_config.json, adapter_model.safetensors)")
    init.add_argument("--base", required=True, help="the base it was trained on: a built-in alias or a local model directory")
    init.add_argument("--eval", required=True, help="evaluation golden set (JSONL)")
    init.add_argument("--contract", required=True, help="JSON Schema every answer must keep")
    init.add_argument("--train", help="training data (JSONL): enables the contamination and dataset_audit gates")
    init.add_argument("--validation", help="validation golden set (JSONL)")
    init.add_argument("--set", action="append", metavar="NAME=PATH",
                      help="another golden set, e.g. regression=..., control=..., safety_refuse=..., safety_benign=...")
    init.add_argument("--system", help="system message of the task prompt")
    init.add_argument("--user", default="{input}", help="user message template; {input} is the item's input")
    init.add_argument("--name", required=True, help="the adapter's name in reports and the version store")
    init.add_argument("--out", help="bundle directory to create (default: adapters/<name>/v<N>, the next free N)")
    init.set_defaults(func=cmd_init)

    sign = sub.add_parser("sign", help="sign a bundle again after editing bundle.yaml (every file hash must match)")
    sign.add_argument("bundle")
    sign.set_defaults(func=cmd_sign)

    sweep = sub.add_parser("sweep", help="train and check one candidate per point of a grid of recipe settings; "
                                         "table and frontier plot of the results")
    sweep.add_argument("recipe", help="recipe.yaml")
    sweep.add_argument("--set", action="append", metavar="FIELD=V1,V2",
                       help="a recipe field and the values to try, e.g. training.learning_rate=5e-4,1e-3 or "
                            "data.rehearsal.weight=0,1,4; repeat for a grid")
    sweep.add_argument("--rank", help="ranks to train, comma-separated, e.g. 4,8,16,32 (LoRA keeps alpha / r)")
    sweep.add_argument("--out", help="where the table, plot and reports go (default: reports/sweep-<name>)")
    sweep.add_argument("--device", help="override the serving device for the checks (cpu, cuda)")
    sweep.add_argument("-q", "--quiet", action="store_true")
    sweep.set_defaults(func=cmd_sweep)

    gates = sub.add_parser("gates", help="list installed gates")
    gates_sub = gates.add_subparsers(dest="gates_command", required=True)
    gates_sub.add_parser("list", help="list installed gates").set_defaults(func=cmd_gates_list)

    promote = sub.add_parser("promote", help="move a verified, passing version to a release channel")
    promote.add_argument("bundle")
    promote.add_argument("--channel", default="production", choices=["candidate", "production", "archived"])
    promote.set_defaults(func=cmd_promote)

    rollback = sub.add_parser("rollback", help="restore an earlier production version")
    rollback.add_argument("name")
    rollback.add_argument("--to", required=True, help="the version to restore, e.g. v1")
    rollback.add_argument("--store", default="adapters/versions.sqlite")
    rollback.add_argument("--no-replay", action="store_true",
                          help="verify hashes and signature only; do not replay the version's recorded outputs")
    rollback.add_argument("--device", help="where to replay (default: the version's serving device)")
    rollback.set_defaults(func=cmd_rollback)

    history = sub.add_parser("history", help="versions, verdicts and promotions of an adapter")
    history.add_argument("name")
    history.add_argument("--store", default="adapters/versions.sqlite")
    history.set_defaults(func=cmd_history)

    schema = sub.add_parser("schema", help="print the JSON Schema of a document")
    schema.add_argument("document", choices=["bundle", "recipe", "verdict"])
    schema.set_defaults(func=cmd_schema)
    return parser


_SHOW_WARNING = warnings.showwarning


def _one_line_warnings(message, category, filename, lineno, file=None, line=None) -> None:
    """gatekeeper's own warnings (a broken gate package, an adapter trained on another base) as one
    line, not a source location; a library's warnings as Python shows them."""
    if issubclass(category, GatekeeperWarning):
        print(f"gatekeeper: warning: {shorten(str(message), 400)}", file=sys.stderr)
    else:
        _SHOW_WARNING(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _one_line_warnings
    try:
        return int(args.func(args))
    except GatekeeperError as exc:
        print(f"gatekeeper: error: {shorten(first_line(exc), 1000)}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("gatekeeper: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("GATEKEEPER_DEBUG"):
            raise
        print(f"gatekeeper: internal error: {type(exc).__name__}: {exc} (set GATEKEEPER_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return int(ExitCode.INTERNAL_ERROR)


if __name__ == "__main__":
    sys.exit(main())
