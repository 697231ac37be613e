"""How the `vitaccel` command shows things on a terminal: the progress of a step and tables.

Progress goes to stderr (so that ``--json`` output on stdout stays machine-readable); tables are
rendered to text with rich, so that a command can return them as lines to print.
"""

import contextlib
import sys

__all__ = ["step_progress", "table", "runs_table"]


class _Progress:
    """A ``progress(message)`` callback: ``show`` the current step; :meth:`note` a line that stays."""

    def __init__(self, show, note):
        self._show, self.note = show, note

    def __call__(self, message: str) -> None:
        self._show(message)


@contextlib.contextmanager
def step_progress(quiet: bool):
    """A ``progress(message)`` callback showing the current step on stderr (a spinner on a terminal),
    with ``progress.note(message)`` for what must stay on screen (an expected duration said up front).
    Both may be called from another thread (the tool watchers of ``boards/synth.py`` do)."""
    from rich.console import Console

    console = Console(stderr=True, log_path=False)
    if quiet:
        yield _Progress(lambda message: None, lambda message: None)
        return
    if not sys.stderr.isatty():
        yield _Progress(console.log, console.log)
        return
    with console.status("starting") as status:
        yield _Progress(status.update, console.log)


def table(title: str, columns, rows, justify=None) -> str:
    """A rich table as stdout shows it; each column justified as ``justify`` says (default: right)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column, side in zip(columns, justify or ["right"] * len(columns)):
        table.add_column(column, justify=side)
    for row in rows:
        table.add_row(*row)
    console = Console()
    with console.capture() as text:
        console.print(table)
    return text.get().removesuffix("\n")


def runs_table(title: str, runs: list, extra=()) -> str:
    """The per-image table of a model run; ``extra``: (column, text of a run) after the cycles."""
    def exact(r):
        error = "" if r.get("error") in (None, "NONE") else f": {r['error']}"
        error += f" at {r['pc']:#x}" if error and "pc" in r else ""
        return {None: "-", True: "yes", False: "NO" + error}[r["bit_exact"]]

    return table(title, ("image", "label", "predicted", "golden", "bit-exact", "cycles", *(c for c, _ in extra)),
                  [(str(r["image"]), str(r["label"]), str(r["predicted"]), str(r.get("golden")), exact(r),
                    "-" if r["cycles"] is None else f"{r['cycles']:,}", *(text(r) for _, text in extra))
                   for r in runs])
