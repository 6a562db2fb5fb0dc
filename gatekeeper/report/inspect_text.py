"""``gatekeeper inspect`` in the terminal: the examples token by token, the length table, what is too long.

The pieces are ``training.inspect.pieces``, as on the HTML page, so both read the same.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from gatekeeper.training.inspect import CUT, LOSS_CLOSE, LOSS_OPEN, SEPARATOR, WEIGHT, fmt_count, pieces

OVER_LONG_SHOWN = 50  # in the terminal; the HTML page lists them all


def print_inspection(inspection, console) -> None:
    console.print(f"[bold]{inspection.name}[/] ({inspection.kind} {inspection.source}): what training sees",
                  soft_wrap=True)
    label = f"label field {inspection.label_field!r}" if inspection.label_field else "no label field in the contract"
    console.print(f"base {inspection.base} (tokenizer only, from {inspection.tokenizer}); max_seq_len "
                  f"{inspection.max_seq_len} (from {inspection.max_seq_len_from}); {label}", soft_wrap=True)
    console.print(f"{SEPARATOR} separates tokens; {LOSS_OPEN}…{LOSS_CLOSE} marks a token that carries loss "
                  f"(the answer and its end-of-turn token: labels != -100); ↵ is a line break; {CUT} is where "
                  f"max_seq_len cuts", style="dim", soft_wrap=True)
    if inspection.field_weights:
        weighed = ", ".join(f"{name} {WEIGHT}{fmt_count(w)}" for name, w in inspection.field_weights.items())
        console.print(f"{LOSS_OPEN}…{LOSS_CLOSE}{WEIGHT}N: the token weighs N times in the loss "
                      f"(training.field_weights: {weighed}; the train split only)", style="dim", soft_wrap=True)
    styles = {"token": "", "loss": "bold green", "separator": "dim", "cut": "bold white on red"}
    for number, view in enumerate(inspection.examples, 1):
        labelled = f", {inspection.label_field} {view.label}" if view.label is not None else ""
        fits = (f"over max_seq_len {view.max_seq_len} by {view.length - view.max_seq_len}: training refuses it"
                if view.cut_at is not None else f"fits max_seq_len {view.max_seq_len}")
        console.rule(f"example {number} of {len(inspection.examples)}: {view.id}", align="left")
        console.print(f"{view.split} line {view.line}{labelled}: {view.length} tokens = {view.prompt_tokens} prompt "
                      f"+ {view.answer_tokens} answer (carry loss); {fits}", soft_wrap=True)
        text = Text()
        for piece in pieces(view):
            style = styles[piece.kind] + (" strike dim" if piece.cut and piece.kind != "cut" else "")
            text.append(piece.text, style=style.strip() or None)
        console.print(text, soft_wrap=True)  # no wrapping inserted: the lines are the template's own
    for note in inspection.notes:
        console.print(f"note: {note}", soft_wrap=True)

    spread = lambda s: f"{s.min} / {fmt_count(s.median)} / {s.p95} / {s.max}"  # noqa: E731
    table = Table("set", "label", "n", "tokens min / median / p95 / max", "prompt", "answer (loss)",
                  f"> {inspection.max_seq_len}", title="lengths in tokens (p95: nearest rank)", title_justify="left",
                  caption="training checks the lengths of train and validation only (eval is not trained on)",
                  caption_justify="left")
    for row in inspection.lengths:
        whole = row.label is None
        over = ("—" if row.split not in ("train", "validation") else
                f"[red]{row.over}[/]" if row.over else "0")
        table.add_row(row.split if whole else "", "all" if whole else row.label, str(row.count),
                      spread(row.total), spread(row.prompt), spread(row.answer), over,
                      style="bold" if whole else None, end_section=False)
    console.print(table)

    over_long = inspection.over_long
    if not over_long:
        console.print(f"[green]every train and validation example fits max_seq_len {inspection.max_seq_len}[/] "
                      f"(longest: {inspection.needed_max_seq_len} tokens)")
        return
    console.print(f"[red]{len(over_long)} train/validation example(s) exceed max_seq_len {inspection.max_seq_len}: "
                  f"training would refuse them[/] (it never truncates); raise training.max_seq_len to at least "
                  f"{inspection.needed_max_seq_len} or shorten them:", soft_wrap=True)
    listed = Table("set", "id", "line", "tokens", "over by")
    for entry in over_long[:OVER_LONG_SHOWN]:
        listed.add_row(entry.split, entry.id, str(entry.line), str(entry.length),
                       str(entry.length - inspection.max_seq_len))
    console.print(listed)
    if len(over_long) > OVER_LONG_SHOWN:
        console.print(f"… and {len(over_long) - OVER_LONG_SHOWN} more (--html lists them all)")
