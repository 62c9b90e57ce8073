"""The one wrapper every entry point uses: a bad value or file ends the command with one line, `error: ...`,
and a non-zero exit status, never a Python traceback."""

import logging
import sys
from collections.abc import Callable
from typing import NoReturn

from hydra.errors import HydraException, InstantiationException

# What a user's input can cause: a bad value, a missing or unreadable file, a config Hydra cannot compose.
USER_ERRORS = (ValueError, KeyError, OSError, HydraException)
OUR_LOGGERS = ("train", "tune", "sweep", "lab", "trainer", "data")  # INFO; other libraries' loggers: WARNING


def user_message(error: BaseException) -> str:
    """The message that names the bad value. instantiate() wraps what the constructors raise; their own
    message is the one that names the key."""
    if isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return str(error).strip()


def fail(message: str, exit_code: int = 2) -> NoReturn:
    """Print `error: <message>` to stderr and exit."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(exit_code)


def run(main: Callable[[list[str]], int]) -> NoReturn:
    """Run a script's `main(argv)` and exit with its status; a user error gives one line and status 2."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        exit_code = main(sys.argv[1:])
    except USER_ERRORS as error:
        fail(user_message(error))
    sys.exit(exit_code)
