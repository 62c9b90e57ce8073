"""What every entry point runs in: the command ends with the exit status its outcome carries
(mnist_lab.errors), a bad value or file with one line, `error: ...`, and status 2 (1 when the machine failed:
a full disk), never a Python traceback; a bug in the code keeps its traceback. The one module below the entry
points that ends a process."""

import atexit
import contextlib
import difflib
import errno
import functools
import logging
import multiprocessing
import os
import re
import sys
import threading
from collections.abc import Callable
from typing import Any, NoReturn

from hydra.errors import (
    ConfigCompositionException,
    HydraException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
)

from mnist_lab.config import registry
from mnist_lab.errors import LabError, UserError, exit_code_of, said

OUR_LOGGERS = (
    "train",
    "tune",
    "sweep",
    "mnist_lab",
)  # INFO (mnist_lab: every module of ours); other libraries' loggers: WARNING


def user_message(error: BaseException) -> str:
    """The one line that names the bad value or file and says what to do."""
    if isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__  # instantiate() wraps what the constructors raise; theirs names the key
    if isinstance(error, MissingConfigException):
        return _missing_option(error)
    if isinstance(error, ConfigCompositionException) and hasattr(error.__cause__, "parent_node"):
        return _unknown_key(error)
    if isinstance(error, OverrideParseException):
        lines = [line for line in str(error).splitlines() if not line.startswith("See https://")]
        return " ".join("; ".join(lines).split()) + f" ({_override_hint(str(error))})"
    if isinstance(error, OSError) and error.errno == errno.ENAMETOOLONG:
        longest = max(re.split(r"[/=.]", str(error.filename or "")), key=len)
        held = next((a for a in sys.argv[1:] if longest in a), str(error.filename))
        return (f"{held.partition('=')[0][:60]}...: a name of {len(longest)} characters, too long for the file "
                "system (255 at most): shorten it")  # fmt: skip
    if isinstance(error, KeyError) and error.args:
        return f"missing key {error.args[0]!r}"
    return " ".join(str(error).split())


def _override_hint(said: str) -> str:
    """What to do about an override Hydra could not parse: quote a value with a space or a non-ASCII letter
    (the shell splits the one, Hydra's grammar refuses the other unquoted)."""
    argv = sys.argv[1:]
    failed = re.search(r"override '([^']*)'", said)
    split = failed and failed.group(1) in argv and "=" not in failed.group(1)
    if split and argv.index(failed.group(1)) > 0 and "=" in argv[argv.index(failed.group(1)) - 1]:
        before = argv[argv.index(failed.group(1)) - 1]
        key, _, value = before.partition("=")
        return (f"'{failed.group(1)}' follows {before}: a value with a space is quoted, as in "
                f"""'{key}="{value} {failed.group(1)}"'""")  # fmt: skip
    odd = next((a for a in argv if not a.isascii() and "=" in a), None)
    if odd:
        key, _, value = odd.partition("=")
        return f"""{key}: a value with a non-ASCII letter is quoted, as in '{key}="{value}"'"""
    return "an override is key=value, e.g. trainer.epochs=3"


def _missing_option(error: MissingConfigException) -> str:
    """`model=lenet7` -> `model=lenet7: no such option; model is one of lenet, lenet_res, resmlp`."""
    group, _, option = (error.missing_cfg_file or "").rpartition("/")
    if not group:  # a config file, not an option of a group
        return str(error).splitlines()[0]
    choices = ", ".join(error.options or []) or "none"
    close = difflib.get_close_matches(option, error.options or [], n=1)
    hint = f" (did you mean {group}={close[0]}?)" if close else ""
    return f"{group}={option}: no such option{hint}; {group} is one of: {choices}"


def _unknown_key(error: ConfigCompositionException) -> str:
    """`trainer.epocs=3` -> `trainer.epocs=3: trainer has no key epocs (did you mean trainer.epochs?) ...`."""
    cause = error.__cause__
    full_key, key = str(cause.full_key), str(cause.key)  # type: ignore[union-attr]
    keys = [str(k) for k in (cause.parent_node or {}) if k != "hydra"]  # type: ignore[union-attr]
    parent = full_key.rpartition(".")[0]
    where = parent or "the config"
    append = re.search(r"use (\+\S+)", str(error))
    close = difflib.get_close_matches(key, keys, n=1)
    hint = (
        f"did you mean {'.'.join(filter(None, [parent, close[0]]))}?"
        if close
        else f"its keys: {', '.join(keys)}"
    )
    target = (cause.parent_node or {}).get("_target_")  # type: ignore[union-attr]
    takes = registry().get(parent, {}).get(str(target), frozenset())  # what the callable built there accepts
    added = f"; to add it: {append.group(1)}" if append and key in takes else ""
    setting = append.group(1)[1:] if append else full_key
    return f"{setting}: {where} has no key {key} ({hint}){added}"


def require(args: dict[str, str], keys: tuple[str, ...], usage: str) -> None:
    """Refuse a command without the arguments it needs, naming them, with its usage."""
    missing = [f"{key}=" for key in keys if key not in args]
    if missing:
        raise UserError(f"{' and '.join(missing)} missing ({usage})")


def fail(message: str, exit_code: int = 2) -> NoReturn:
    """Print `error: <message>` to stderr and exit."""
    print(f"error: {message}", file=sys.stderr)
    end(exit_code)


def end(status: int) -> NoReturn:
    """End the process with exit status `status`. Where nothing is left to wait for (no other thread but
    daemons, no child process), skip the interpreter's teardown: atexit's handlers run (logging's flush,
    weakref finalizers) and the standard streams are flushed, then os._exit. Freeing torch's modules one by one
    at exit took 0.9-1.1 s of every command here (`python -c "import torch, torch._dynamo"` spends that after
    its last line). Otherwise (a sweep's process pool, Ray), or where pytest runs an entry point inside its own
    process, an ordinary exit, which shuts those down in order."""
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if "pytest" in sys.modules or others or multiprocessing.active_children():
        sys.exit(status)
    atexit._run_exitfuncs()  # noqa: SLF001 (what the interpreter would call next; no public name)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more can reach it
            stream.flush()
    os._exit(status)


def configure_logging() -> None:
    """Our loggers at INFO, other libraries' at WARNING; a log file that can no longer be written (a full
    disk) is skipped quietly instead of printing a traceback per line."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s", force=True)
    logging.raiseExceptions = False
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)


def run(main: Callable[[list[str]], int]) -> NoReturn:
    """Run a script's `main(argv)` and exit with its status; a user error gives one line and status 2."""
    configure_logging()
    end(_status(lambda: main(sys.argv[1:])))


_kept: list[Exception] = []  # how a single run under run_hydra ended, kept past Hydra


def keeping_outcome(task: Callable[[], object], single_run: bool) -> object:
    """`task()`, inside a `@hydra.main` function; how a single run ended, its line said (mnist_lab.shell), is
    kept for run_hydra instead of raised through Hydra, which would print "Error executing job with overrides"
    after the run's own line (a max_steps stop, exit status 0, included). A sweep's pass through: Hydra records
    them per job."""
    try:
        return task()
    except Exception as ended:
        if not single_run or not said(ended):
            raise
        _kept.append(ended)
        return None


def run_hydra(main: Callable[[], object]) -> NoReturn:
    """Run a `@hydra.main` function: Hydra's errors (an unknown option or key, a bad override) become one
    line and exit status 2 instead of Hydra's report and 1; a run's or sweep's end, its exit status."""
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing its report and exiting 1
    logging.raiseExceptions = False

    def call() -> int:
        main()
        if _kept:
            raise _kept.pop()
        return 0

    end(_status(call))


def ending_the_command(callback: Callable[..., None]) -> Callable[..., None]:
    """A Hydra callback's method whose LabError (a refusal before anything ran, a sweep whose jobs failed)
    ends the command with its line and exit status: Hydra itself turns a callback's exception into a warning
    and goes on."""

    @functools.wraps(callback)
    def calling(*args: Any, **kwargs: Any) -> None:
        try:
            callback(*args, **kwargs)
        except LabError as error:
            if said(error):
                end(error.exit_code)
            fail(str(error), error.exit_code)

    return calling


class BelowWarning(logging.Filter):
    """Lets through what is less than a warning: a run's progress goes to stdout, its warnings and errors to
    stderr, where scripts and schedulers look (configs/config.yaml's job_logging)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


def _status(call: Callable[[], int | None]) -> int:
    """`call()`'s exit status: its own, or the one the exception it raised carries (mnist_lab.errors), its line
    shown unless the run already said it. An exception the lab did not raise on purpose, a bug, keeps its
    traceback (exit status 1), but where the run has logged it already."""
    try:
        return call() or 0
    except Exception as error:
        code = exit_code_of(error)
        if said(error):
            return 1 if code is None else code
        if code is not None:
            fail(str(error) if isinstance(error, LabError) else user_message(error), code)
        if isinstance(
            error, HydraException | OSError
        ):  # a config Hydra cannot compose, a file the user named
            fail(user_message(error), 2)
        raise
