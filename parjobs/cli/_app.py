"""The argument parser: commands, options, help texts with examples."""

from __future__ import annotations

import argparse
import importlib
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, NoReturn, cast

from .. import __version__
from .._status import JobStatus
from .._util import kernel_abspath, names_contents
from ._errors import CliError

DESCRIPTION = """\
File operations as parallel, resumable jobs. Each job runs in the foreground with live
progress; Ctrl-C pauses it (checkpointed) and prints the command that resumes it."""

EPILOG = """\
examples:
  parjobs copy ~/Photos /mnt/backup --verify
  parjobs jobs --status paused
  parjobs resume 3f2a
  parjobs demo

exit codes: 0 done, 1 completed with errors or failed, 2 usage or input error,
3 paused or interrupted (resumable), 4 cancelled"""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (`CliError`), not usage plus exit."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see '{self.prog} --help')")


def _int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An integer option: ``low`` or more (and at most ``high``), else a one-line error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:  # also for thousands of digits (int's conversion limit)
            raise argparse.ArgumentTypeError(f"expected an integer, got {_short(text)}") from None
        if high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"must be between {low} and {high}, got {_short(str(value))}"
            )
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {_short(str(value))}")
        return value

    return parse


def _short(text: str) -> str:
    """An option value for an error message, cut short (one line, a readable length)."""
    return repr(text if len(text) <= 40 else text[:37] + "...")


_quality = _int_at_least(1, 100)


_SUFFIXES = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "ki": 1024, "mi": 1024**2, "gi": 1024**3}
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*((?:[kmg]i?)?)b?", re.IGNORECASE | re.ASCII)
#: The largest size a file can have (off_t): anything above is a typo, not a size.
MAX_SIZE = 2**63 - 1


def _size(text: str) -> int:
    """A byte count with an optional suffix: 4096, 10k, 5M, 1.5GiB. Plain decimal digits
    only: no sign, exponent, ``inf`` or ``nan`` (which a float parser would take)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"expected a size such as 4096, 10k or 5M, got {_short(text)}"
        )
    from decimal import Decimal  # (only here: ~1 ms of start-up)

    value = Decimal(match[1]) * _SUFFIXES[match[2].lower()]
    if value > MAX_SIZE:
        raise argparse.ArgumentTypeError(f"too large: {_short(text)} (at most 8 EiB)")
    return int(value)


_AGE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smhdw]?)", re.ASCII)
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "": 86400}


def parse_age(text: str) -> float:
    """An age such as ``30d``, ``12h``, ``90m``, ``45s`` or ``2w`` in seconds (a bare
    number is days); a `ValueError` naming the text otherwise."""
    match = _AGE.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"expected an age such as 30d, 12h or 90m, got {text[:40]!r}")
    return float(match[1]) * _AGE_UNITS[match[2]]


def _age(text: str) -> float:
    try:
        return parse_age(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _statuses(text: str) -> list[JobStatus]:
    out = []
    for word in filter(None, (w.strip() for w in text.split(","))):
        try:
            out.append(JobStatus(word))
        except ValueError:
            choices = ", ".join(s.value for s in JobStatus)
            raise argparse.ArgumentTypeError(
                f"unknown status {word!r} (one of {choices})"
            ) from None
    return out


def _globals(parser: argparse.ArgumentParser, *, sub: bool, client: bool = True) -> None:
    """Options accepted before and after the command (a subcommand's default never wins).
    ``client``: the command can talk to a server (``--server``) instead of the store."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if sub else value

    group = parser.add_argument_group("global options")
    group.add_argument(
        "--store",
        metavar="PATH|URL",
        default=default(None),
        help="job store: a SQLite file or a postgresql:// URL (default: $PARJOBS_STORE, else "
        "$XDG_STATE_HOME/parjobs/jobs.sqlite)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print JSON lines (progress snapshots and results) for scripts",
    )
    group.add_argument(
        "--plain",
        action="store_true",
        default=default(False),
        help="plain progress lines even on a terminal",
    )
    if not client:
        return
    group.add_argument(
        "--server",
        metavar="URL",
        default=default(None),
        help="talk to a running 'parjobs serve' at URL (its printed URL works) instead of "
        "opening the store (default: $PARJOBS_SERVER); see docs/serve.md",
    )
    group.add_argument(
        "--token-file",
        metavar="PATH",
        default=default(None),
        help="with --server: the file holding the token (default: $PARJOBS_TOKEN, else the "
        "token file 'parjobs serve' made on this machine)",
    )


def _job_id(parser: argparse.ArgumentParser, *, optional: bool = False) -> None:
    parser.add_argument(
        "job",
        nargs="?" if optional else None,
        metavar="ID",
        help="job id or a unique prefix of it",
    )


def _transfer_operands(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument("sources", nargs="+", metavar="SRC", help=f"files or directories to {verb}")
    parser.add_argument(
        "destination",
        metavar="DST",
        help="target directory, or the new name of a single source (like cp/mv)",
    )


def _workers(parser: argparse._ActionsContainer) -> None:
    from .._config import DEFAULT_WORKERS
    from .._util import MAX_WORKERS

    parser.add_argument(
        "-w",
        "--workers",
        type=_int_at_least(1, MAX_WORKERS),
        default=DEFAULT_WORKERS,
        metavar="N",
        help=f"items worked on at once, 1 to {MAX_WORKERS} (default {DEFAULT_WORKERS})",
    )
    parser.add_argument(
        "--cluster",
        metavar="ADDRESS",
        default=None,
        help="run the items on a Dask cluster: a scheduler address (tcp://host:8786), or "
        "local:N for N local worker processes (default: $PARJOBS_CLUSTER); see "
        "docs/scale-out.md",
    )
    parser.add_argument(
        "--cluster-path-map",
        metavar="HERE=THERE,...",
        default=None,
        help="with --cluster: paths under HERE here are under THERE on the workers "
        "(default: $PARJOBS_CLUSTER_PATH_MAP)",
    )


def _detach(parser: argparse._ActionsContainer) -> None:
    parser.add_argument(
        "--detach",
        action="store_true",
        help="only queue the job for 'parjobs worker' processes of the store, print its id "
        "and exit 0 (docs/stores.md)",
    )


def _conflict(parser: argparse.ArgumentParser, *, ask: bool = False) -> None:
    choices = ("fail", "skip", "overwrite", "rename", "update") + (("ask",) if ask else ())
    parser.add_argument(
        "--on-conflict",
        choices=choices,
        default="fail",
        help="when a destination file exists: fail that item (default), skip it, overwrite "
        "it, write next to it under a new name, or overwrite it only if the source is "
        "strictly newer (by modification time; else skip it, as cp -u)"
        + ("; or ask, file by file (o/s/r; O/S/R: the same for all)" if ask else ""),
    )


def _copy(p: Parser) -> None:
    _transfer_operands(p, "copy")
    _conflict(p, ask=True)
    p.add_argument("--verify", action="store_true", help="re-read and compare every copy")
    p.add_argument("--durable", action="store_true", help="fsync each file before finishing it")
    p.add_argument(
        "-L", "--follow-symlinks", action="store_true", help="copy what symlinks point to"
    )
    p.add_argument("--preserve-xattrs", action="store_true", help="copy extended attributes")
    p.add_argument("--preserve-owner", action="store_true", help="copy owner and group")
    p.add_argument(
        "--no-hard-links",
        dest="hard_links",
        action="store_false",
        help="copy each name of a file with hard links apart (default: linked, as cp -a)",
    )


def _move(p: Parser) -> None:
    _transfer_operands(p, "move")
    _conflict(p)
    p.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="do not compare copies before removing sources (across file systems)",
    )
    p.add_argument("--durable", action="store_true", help="fsync each file before finishing it")


def _delete(p: Parser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or directories to delete")
    p.add_argument("--trash", action="store_true", help="move to the trash instead of deleting")
    p.add_argument(
        "--force-ancestor",
        action="store_true",
        help="allow deleting the current directory or one of its ancestors (the root "
        "directory, the home directory and its ancestors are always refused)",
    )


def _hash(p: Parser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or directories to hash")
    p.add_argument(
        "--algorithm",
        choices=("xxh3_128", "xxh3_64", "xxh64"),
        default="xxh3_128",
        help="digest algorithm (default xxh3_128)",
    )
    p.add_argument(
        "-o", "--output", metavar="FILE", help="write digests to FILE instead of printing them"
    )
    p.set_defaults(prehash=None)


def _hash_prehash(args: argparse.Namespace) -> None:
    """``args.prehash``: the job's files hashed from now on (`Prehash`), for XXH3-128 (what
    it computes), unless the job is left to a worker (``--detach``)."""
    if not args.detach and args.algorithm == "xxh3_128":
        from ..ops._prehash import Prehash

        args.prehash = Prehash.start([operand_path(p) for p in args.paths])


def expand_tilde(text: str) -> str:
    """``~/x`` and ``~user/x`` expanded (a shell leaves them so when quoted, from a variable,
    after ``--out=``), unless a ``~`` or ``~user`` exists here: then ``rm``, ``cp`` and
    ``mv`` take the path as written, below that directory, and expanding it named another
    file (``delete '~/old'`` deleted ``$HOME/old``). That is refused as ambiguous."""
    expanded = os.path.expanduser(text)
    first = text.split(os.sep, 1)[0]
    if expanded != text and os.path.lexists(first):
        raise CliError(
            f"{text!r} is ambiguous: {first!r} exists here, and it also names "
            f"{expanded!r}; write {os.path.join(os.curdir, text)!r} for the one here "
            "or the full path for the other"
        )
    return expanded


def operand_path(text: str) -> str:
    """A path operand as a job keeps it: absolute (a job may be resumed from another
    directory), keeping a trailing slash, and a last component ``.`` or ``..`` as ``/.``
    (`names_contents`: ``copy x/. D`` copies what ``x`` holds into ``D``, as ``cp -a``). A
    ``..`` is resolved as the kernel does (`kernel_abspath`), which ``abspath`` does not:
    ``link/../x`` is the ``x`` next to the link's target (what ``mv``, ``cp`` and parjobs'
    delete take), not the ``x`` beside the link, another file."""
    expanded = expand_tilde(text)
    named = expanded.rstrip(os.sep)
    while named.endswith(os.sep + os.curdir):  # ``x/.`` is the directory ``x``
        named = named[: -len(os.curdir)].rstrip(os.sep)
    path = kernel_abspath(named or expanded[:1])  # (``/``, ``/.``: the root; ``''``: empty)
    if names_contents(expanded):
        return os.path.join(path, os.curdir)
    if text.endswith(os.sep) and not path.endswith(os.sep):
        path += os.sep
    return path


def _dupes(p: Parser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or directories to compare")
    p.add_argument(
        "--min-size",
        type=_size,
        default=1,
        metavar="SIZE",
        help="ignore files smaller than SIZE (e.g. 4096, 10k, 5M; default 1)",
    )
    p.set_defaults(prescan=None)


def _dupes_prescan(args: argparse.Namespace) -> None:
    """``args.prescan``: the job's scan begun now (`Prescan`), unless it is left to a worker
    (``--detach``)."""
    if not args.detach:
        from ..ops._prescan import Prescan

        args.prescan = Prescan.start([operand_path(p) for p in args.paths], args.min_size)


def _thumbnails(p: Parser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="images or directories of images")
    p.add_argument(
        "--size", type=_int_at_least(1), default=256, help="longest side in pixels (default: 256)"
    )
    p.add_argument(
        "--format",
        choices=("webp", "jpeg", "png"),
        help="image format (default webp; png with --freedesktop)",
    )
    p.add_argument("--quality", type=_quality, default=80, help="1-100 for webp/jpeg (default 80)")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--freedesktop",
        action="store_true",
        help="write PNGs to the shared freedesktop.org cache ($XDG_CACHE_HOME/thumbnails); "
        "--size must be 128, 256, 512 or 1024",
    )
    where.add_argument(
        "--out",
        metavar="DIR",
        help="write thumbnails into DIR (default $XDG_CACHE_HOME/parjobs/thumbnails)",
    )


def _jobs(p: Parser) -> None:
    p.add_argument(
        "--status",
        type=_statuses,
        action="extend",
        metavar="STATUS[,STATUS]",
        help="only jobs with these statuses (repeatable)",
    )
    prune = p.add_subparsers(dest="jobs_command", metavar="prune", parser_class=Parser)
    p = prune.add_parser(
        "prune",
        help="delete finished jobs and their files from the store",
        description="Delete finished jobs (completed, cancelled, failed, with errors) older "
        "than --older-than, or those given by id, with their private files; print what was "
        "deleted. Finished jobs are also deleted after $PARJOBS_RETENTION (default 30d; 0 "
        "keeps them) when parjobs opens the store.",
        epilog="example:\n  parjobs jobs prune --older-than 7d --dry-run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _globals(p, sub=True)  # it works through --server too, as `jobs` does
    p.add_argument("jobs", nargs="*", metavar="ID", help="job ids or unique prefixes")
    p.add_argument(
        "--older-than",
        type=_age,
        metavar="AGE",
        help="finished jobs that ended more than AGE ago: 30d, 12h, 90m, 2w (bare number: days)",
    )
    p.add_argument("--dry-run", action="store_true", help="only print what would be deleted")


def _show(p: Parser) -> None:
    _job_id(p)
    p.add_argument(
        "--errors",
        "--all-errors",
        dest="all_errors",
        action="store_true",
        help="list every failed item",
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="with each failed item's traceback (as kept by the store)",
    )
    p.add_argument(
        "--items",
        action="store_true",
        help="list what each item did (the item log): one line per item, or with --json "
        "one JSON object per line",
    )
    p.add_argument(
        "--action",
        metavar="ACTION",
        help="with --items: only items of this action (copied, moved, trashed, failed...)",
    )


def _trash(p: Parser) -> None:
    trash = p.add_subparsers(dest="trash_command", metavar="list|restore", required=True)
    tl = trash.add_parser("list", help="list trashed items, newest first")
    _globals(tl, sub=True, client=False)  # after the subcommand too, as `jobs prune` takes them
    tr = trash.add_parser(
        "restore", help="move items back to where they were trashed from (never replacing)"
    )
    _globals(tr, sub=True, client=False)
    tr.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="an item in a trash's files/ directory, or the original path of a trashed item "
        "(the newest one trashed from there)",
    )


def _waits(verb: str) -> Callable[[Parser], None]:
    """``pause`` and ``cancel``: a job id, and ``--no-wait``."""

    def arguments(p: Parser) -> None:
        _job_id(p)
        p.add_argument("--no-wait", action="store_true", help=f"do not wait until it has {verb}")

    return arguments


def _resume(p: Parser) -> None:
    _job_id(p, optional=True)
    p.add_argument("--all", action="store_true", help="every paused or interrupted job")
    p.add_argument(
        "--detach",
        action="store_true",
        help="only queue it again (its checkpoint kept) for whichever 'parjobs worker' of the "
        "store claims it, print its id and exit 0 (docs/stores.md)",
    )


def _demo(p: Parser) -> None:
    p.add_argument("--dir", metavar="DIR", help="work in DIR (kept) instead of a temporary one")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")


def _serve(p: Parser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument(
        "--port", type=_int_at_least(0), default=8765, help="port (default 8765; 0: a free one)"
    )
    p.add_argument(
        "--token-file",
        metavar="PATH",
        default=argparse.SUPPRESS,  # the global option's (None) when not given
        help="tokens, one per line ('TOKEN' or 'TOKEN owner=NAME'); needed off loopback "
        "(default: $XDG_STATE_HOME/parjobs/serve-tokens, created)",
    )


def _worker(p: Parser) -> None:
    p.add_argument(
        "--until-idle", action="store_true", help="exit once no job is left for this worker"
    )
    p.add_argument(
        "-j",
        "--jobs",
        type=_int_at_least(1),
        default=4,
        metavar="N",
        help="jobs run at once by this worker (default 4; queue capacities hold across "
        "all workers)",
    )


class Command(NamedTuple):
    """A command: its one-line help and example, the arguments it adds to its parser, the
    function that runs it (``module:function`` of this package, imported once chosen),
    whether it can work through ``--server`` (``client``) and whether it ``runs`` a job."""

    help: str
    example: str
    arguments: Callable[[Parser], None]
    run: str
    client: bool = True
    runs: Literal["job", "detachable job"] | None = None
    #: What the command starts right after parsing (`prepare`), or None.
    prepare: Callable[[argparse.Namespace], None] | None = None


#: Every command, in the order ``parjobs --help`` lists them.
COMMANDS: dict[str, Command] = {
    "copy": Command(
        "copy files and trees",
        "parjobs copy ~/Photos /mnt/backup --verify",
        _copy,
        "_commands:copy",
        runs="detachable job",
    ),
    "move": Command(
        "move files and trees",
        "parjobs move ~/Downloads/*.iso /mnt/isos",
        _move,
        "_commands:move",
        runs="detachable job",
    ),
    "delete": Command(
        "delete files and trees",
        "parjobs delete ~/tmp/build --trash",
        _delete,
        "_commands:delete",
        runs="detachable job",
    ),
    "hash": Command(
        "hash files",
        "parjobs hash ~/Photos --output photos.xxh3 --algorithm xxh3_128",
        _hash,
        "_commands:hash_",
        runs="detachable job",
        prepare=_hash_prehash,
    ),
    "dupes": Command(
        "find duplicate files",
        "parjobs dupes ~/Photos ~/Backup --min-size 1M",
        _dupes,
        "_commands:dupes",
        runs="detachable job",
        prepare=_dupes_prescan,
    ),
    "thumbnails": Command(
        "make image thumbnails",
        "parjobs thumbnails ~/Photos --size 512 --out thumbs",
        _thumbnails,
        "_commands:thumbnails",
        runs="detachable job",
    ),
    "jobs": Command("list jobs", "parjobs jobs --status paused,interrupted", _jobs, "_manage:jobs"),
    "show": Command(
        "show a job: spec, status, progress, errors", "parjobs show 3f2a", _show, "_manage:show"
    ),
    "undo": Command(
        "undo a job: restore what it trashed, move back what it moved, remove the files "
        "it copied that nobody changed since",
        "parjobs undo 3f2a",
        _job_id,
        "_undo:undo",
        runs="job",
    ),
    "trash": Command(
        "list or restore items in the trash (trashed by parjobs or any freedesktop tool)",
        "parjobs trash restore ~/.local/share/Trash/files/report.pdf",
        _trash,
        "_undo:trash",
        client=False,
    ),
    "pause": Command(
        "pause a running job (also one run elsewhere)",
        "parjobs pause 3f2a",
        _waits("paused"),
        "_manage:pause",
    ),
    "resume": Command(
        "resume paused or interrupted jobs in the foreground",
        "parjobs resume 3f2a",
        _resume,
        "_commands:resume",
        runs="job",
    ),
    "cancel": Command("cancel a job", "parjobs cancel 3f2a", _waits("stopped"), "_manage:cancel"),
    "demo": Command(
        "copy, hash and thumbnail a generated sample tree, pausing and resuming once",
        "parjobs demo --keep",
        _demo,
        "_demo:run_demo",
        client=False,
        runs="job",
    ),
    "serve": Command(
        "serve the HTTP API, live events and metrics of the store's jobs (docs/serve.md)",
        "parjobs serve --port 0",
        _serve,
        "_serve:serve",
        client=False,
        runs="job",
    ),
    "worker": Command(
        "claim and run the store's queued jobs until stopped, for the hosts of a farm",
        "parjobs worker --store postgresql://farm@db/jobs --until-idle",
        _worker,
        "_worker:worker",
        client=False,
        runs="job",
    ),
}


if TYPE_CHECKING:
    _SubParsersAction = argparse._SubParsersAction[Parser]
else:
    _SubParsersAction = argparse._SubParsersAction


class _Commands(_SubParsersAction):
    """The ``COMMAND`` argument, whose parsers are built once a command is chosen:
    ``parjobs copy ...`` builds the copy parser only. Building all sixteen cost ~6 ms of
    every command's start-up (argparse looks for gettext catalogs for each parser), and
    ``parjobs --help`` needs only their names and help lines."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # What argparse checks a command name against (and lists when it is none of them).
        self.choices = list(COMMANDS)  # type: ignore[assignment]
        for name, command in COMMANDS.items():
            self._choices_actions.append(self._ChoicesPseudoAction(name, (), command.help))

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        assert isinstance(values, list)  # nargs=PARSER: the command name and what follows
        name = values[0]
        if name not in self._name_parser_map:
            self._build(name, COMMANDS[name])
        super().__call__(parser, namespace, values, option_string)

    def _build(self, name: str, command: Command) -> None:
        """The parser of ``command``: the global options, its own arguments, and for one
        that ``runs`` a job the worker options (and ``--detach`` for a "detachable job"),
        listed after its own."""
        parser = self.add_parser(
            name,
            description=command.help[0].upper() + command.help[1:] + ".",
            epilog=f"example:\n  {command.example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.set_defaults(command=name)
        _globals(parser, sub=True, client=command.client)
        if command.runs is not None:  # in a group of their own, listed after the command's
            running = parser.add_argument_group("running the job")
            _workers(running)
            if command.runs == "detachable job":
                _detach(running)
        command.arguments(parser)


def build_parser() -> Parser:
    parser = Parser(
        prog="parjobs",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"parjobs {__version__}")
    _globals(parser, sub=False)
    parser.add_subparsers(
        title="commands", metavar="COMMAND", parser_class=Parser, action=_Commands
    )
    return parser


def handler(name: str) -> Callable[[argparse.Namespace], Awaitable[int]]:
    """The function that runs the command ``name`` (its module imported now: a command loads
    only what it uses)."""
    module, _, function = COMMANDS[name].run.partition(":")
    run = getattr(importlib.import_module(f"{__package__}.{module}"), function)
    return cast(Callable[[argparse.Namespace], Awaitable[int]], run)


def prepare(args: argparse.Namespace) -> None:
    """Start what the parsed command will use, on the core its start-up leaves idle (it
    imports trio and its module, ~0.2 s on one core): ``dupes`` lists its paths (see
    `parjobs.ops._prescan`), ``hash`` hashes its files (`parjobs.ops._prehash`). Only for a
    command that runs here (not through a server)."""
    start = COMMANDS[args.command].prepare
    if start is not None:
        start(args)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "command", None) is None:
        raise CliError("a command is required (see 'parjobs --help')")
    return args
