"""The Optuna study of a search, as both sides see it: its storage (an SQLite file in its folder, a database URL
or a journal file), its pruner, and the checks of the `tune` settings. The driver (lab/search/driver.py, tune.py)
and each trial's run (lab/search/trial.py) open the same study through it."""

import re
import time
import warnings
from importlib.util import find_spec
from pathlib import Path

import optuna
from omegaconf import DictConfig

from mnist_lab.errors import NotFound, UserError

STUDY_FILE = "study.db"
PRUNERS = ("median", "halving", "none")


def storage_url(study_dir: str | Path) -> str:
    """The SQLAlchemy URL of the study stored in `study_dir`."""
    return f"sqlite:///{Path(study_dir).absolute() / STUDY_FILE}"


SCHEMA_ATTEMPTS = 5  # opening a new database that other workers are setting up at the same moment
CONNECT_TIMEOUT_S = 10  # a database server that does not answer: refused after this long, not hung on


def database_url(url: str) -> str:
    """`url` with a driver this machine has: `postgresql://` means psycopg (version 3) where psycopg2, SQLAlchemy's
    default for it, is not installed."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername == "postgresql" and not find_spec("psycopg2") and find_spec("psycopg"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def masked(url: str) -> str:
    """`url` as messages show it: its password replaced by ***."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def open_storage(tune: DictConfig) -> optuna.storages.BaseStorage:
    """`tune.storage`: null, an SQLite file in tune.dir; a database URL (`postgresql://...`, `sqlite:///...`),
    with heartbeats, so that a dead worker's trials are failed; or a journal file (Optuna's JournalStorage)."""
    if tune.storage is None:
        return optuna.storages.RDBStorage(storage_url(tune.dir))
    if "://" in tune.storage:
        from sqlalchemy.exc import IntegrityError, SQLAlchemyError

        url = database_url(tune.storage)
        timeout = (
            {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}} if url.startswith("postgresql") else {}
        )
        try:
            for attempt in range(SCHEMA_ATTEMPTS):
                try:
                    with (
                        warnings.catch_warnings()
                    ):  # heartbeats are marked experimental; they fail dead trials
                        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                        return optuna.storages.RDBStorage(
                            url,
                            engine_kwargs=timeout,
                            heartbeat_interval=tune.heartbeat_s,
                            grace_period=tune.grace_s,
                        )
                except (
                    IntegrityError
                ):  # workers started together on a new database both made Optuna's tables:
                    if attempt == SCHEMA_ATTEMPTS - 1:  # one of them won; the others open what it made
                        raise
                    time.sleep(0.5 * (attempt + 1))
        except SQLAlchemyError as error:
            said = " ".join(str(getattr(error, "orig", None) or error).split())
            raise UserError(
                f"tune.storage={masked(tune.storage)}: cannot open the database: {said}"
            ) from None
    path = Path(tune.storage).absolute()
    if not path.parent.is_dir():
        raise NotFound(f"tune.storage={tune.storage}: no folder {path.parent} for the journal file")
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def check_database_url(url: str) -> None:
    """Refuse a database URL no trial could use, before SQLAlchemy says so in a long traceback: an unknown
    scheme, a driver that is not installed, an in-memory database, an SQLite file in a missing folder."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    given = url
    try:
        url = database_url(url)
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise UserError(
            f"tune.storage={masked(given)}: unknown database {parsed.drivername!r}; use sqlite:////path/to/study.db, "
            "postgresql://..., mysql+pymysql://..., or a journal file's path"
        ) from None
    except ArgumentError:  # (NoSuchModuleError is one too: caught first)
        raise UserError(
            f"tune.storage={masked(given)}: not a database URL (dialect+driver://user:password@host/database)"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as error:
        raise UserError(
            f"tune.storage={masked(given)}: the driver for {parsed.drivername} is not installed (no module {error.name!r}): "
            "install it into the project's .venv, or use sqlite:////path/to/study.db or a journal file"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise UserError(f"tune.storage={masked(given)}: an in-memory database, which the trials' processes cannot "
                             "reach; give a file: sqlite:////path/to/study.db")  # fmt: skip
        folder = Path(parsed.database).absolute().parent
        if not folder.is_dir():
            raise NotFound(f"tune.storage={masked(given)}: no folder {folder} for the database file")


def make_pruner(tune: DictConfig) -> optuna.pruners.BasePruner:
    """The pruner `tune.pruner` names: `median` (below the median of earlier trials at the same epoch),
    `halving` (successive halving: keep the best third at each rung) or `none`."""
    name, startup, warmup = tune.pruner.name, tune.pruner.startup_trials, tune.pruner.warmup_epochs
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(warmup, 1), reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UserError(f"tune.pruner.name must be one of {', '.join(PRUNERS)}, got {name!r}")


def check_tune(tune: DictConfig) -> None:
    """Refuse a search setting no search could use, naming the key and the value."""
    for key in ("trials", "jobs", "heartbeat_s", "grace_s"):
        if type(tune[key]) is not int or tune[key] <= 0:
            raise UserError(f"tune.{key} must be an integer > 0, got {tune[key]!r}")
    if tune.grace_s <= tune.heartbeat_s:
        raise UserError(f"tune.grace_s={tune.grace_s} must be longer than tune.heartbeat_s={tune.heartbeat_s}: "
                         "a trial would be failed between two of its own beats")  # fmt: skip
    if tune.storage is not None and (not isinstance(tune.storage, str) or not tune.storage.strip()):
        raise UserError(
            f"tune.storage must be null, a database URL or a journal file path, got {tune.storage!r}"
        )
    if isinstance(tune.storage, str) and "://" in tune.storage:
        check_database_url(tune.storage)
    if tune.pruner.name not in PRUNERS:
        raise UserError(f"tune.pruner.name must be one of {', '.join(PRUNERS)}, got {tune.pruner.name!r}")
    for key, spec in tune.space.items():
        kind = spec.get("type")
        if kind in ("float", "int"):
            low, high = spec.get("low"), spec.get("high")
            if not (isinstance(low, int | float) and isinstance(high, int | float) and low < high):
                raise UserError(
                    f"tune.space.{key}: low and high must be numbers with low < high, got {low!r}, {high!r}"
                )
            if spec.get("log") and low <= 0:
                raise UserError(f"tune.space.{key}: a log scale needs low > 0, got {low!r}")
        elif kind == "categorical":
            if not spec.get("choices"):
                raise UserError(f"tune.space.{key}: choices must be a non-empty list")
        else:
            raise UserError(f"tune.space.{key}: type must be float, int or categorical, got {kind!r}")
