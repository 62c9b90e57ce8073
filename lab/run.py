"""One training run: build it from the config, resume it, fit, test, write metrics.json and status.json,
and say how it ended. train.py's Hydra main is `main` here.

Every run leaves status.json in its run directory (running, completed, failed, stopped or pruned). A single
run that does not complete raises (lab/outcomes.py): RunFailed (exit status 2 for a bad value or file, 1 for any
other failure) or RunStopped (130/143 after a signal); the entry points turn them into exit statuses. In a
multirun a failure is recorded and the sweep goes on (lab.sweep.callbacks.Sweep sums it up); a signal stops
the sweep.
"""

import logging
import os
import re
import shutil
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mnist_lab.artifacts import CHECKPOINTS, copy_checkpoint, load_resume, resume_checkpoint
from mnist_lab.build import Setup, build
from mnist_lab.cli import USER_ERRORS, user_message
from mnist_lab.ddp import join_slurm_job, label_logs
from mnist_lab.outcomes import RunFailed, RunStopped
from mnist_lab.overrides import identity, override_key
from mnist_lab.ownership import DirectoryTaken, owned
from mnist_lab.provenance import provenance
from mnist_lab.status import Pruned, write_status
from mnist_lab.sweep.resume import earlier_job
from mnist_lab.trainer import distributed
from mnist_lab.trainer.checkpoint import BEST, LAST, Checkpoints, check_weights
from mnist_lab.trainer.diagnostics import confusion_matrix, model_summary, per_class_accuracy
from mnist_lab.trainer.evaluation import EpochStats, SetPredictions
from mnist_lab.trainer.files import WriteFailed, write_json
from mnist_lab.trainer.loop import EpochEnd, final_evaluation, fit
from mnist_lab.trainer.state import TrainState
from mnist_lab.trainer.stopping import NonFiniteLoss, StopRequests, TrainingStopped, stopping_at_once
from mnist_lab.trainer.tensorboard import RunLog

log = logging.getLogger("train")

# Always in a run's HParams row (with any overridden key), so that a sweep's runs share one table.
HPARAM_KEYS = (
    "optimizer.lr",
    "optimizer.weight_decay",
    "trainer.batch_size",
    "trainer.epochs",
    "augment.max_shift",
    "seed",
)
HPARAM_GROUPS = ("model", "data", "augment", "optimizer", "scheduler")


@dataclass
class Job:
    """Where a run stands in Hydra's terms, as plain values: its directory, overrides, sweep and choices."""

    run_dir: Path
    overrides: list[str] = field(default_factory=list)
    number: int | None = None  # the job's number in a sweep; None for a single run
    choices: dict[str, Any] = field(default_factory=dict)  # config group -> option (model: lenet)

    @property
    def in_sweep(self) -> bool:
        return self.number is not None

    def status(self, state: str, **details: Any) -> None:
        """Write status.json (rank 0 alone under DDP)."""
        if distributed.is_main():
            write_status(self.run_dir, state, self.overrides, **details)


@dataclass
class Resume:
    """The checkpoint a run continues from, and where it was read."""

    path: Path
    checkpoint: dict[str, Any]


def prepare(
    cfg: DictConfig, run_dir: Path, job: int | None = None, resume_from: Path | None = None
) -> tuple[Setup, Resume | None]:
    """Everything checked and built, and the checkpoint to resume from: the one `cfg.resume` names, else
    `resume_from` (a resumed sweep's stopped job: its last.pt)."""
    setup = build(cfg, job)
    path = resume_checkpoint(cfg.resume, run_dir) or resume_from
    if path is None:
        return setup, None
    checkpoint = load_resume(path, cfg)
    check_weights(setup.state.model, checkpoint["model"], path)
    return setup, Resume(path, checkpoint)


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Build everything from `cfg`, train, test, and write `run_dir/metrics.json`; return the metrics."""
    setup, resume = prepare(cfg, run_dir)
    return train_built(setup, cfg, run_dir, resume)


def continue_from(resume: Resume, state: TrainState, checkpoints: Checkpoints, epochs: float) -> None:
    """Load `resume` into `state`; bring its best.pt (and, with nothing left to train, its last.pt) along when
    it continues in another directory (rank 0 alone under DDP). Where the best weights are nowhere to be found,
    forget_lost_best settles what counts as the best so far."""
    state.load_state_dict(resume.checkpoint)
    progress = state.progress
    log.info(f"resuming from {resume.path} after {progress.step} steps ({progress.epoch} whole epochs)")
    source_best = resume.path.parent / BEST
    elsewhere = checkpoints.write and source_best.resolve() != checkpoints.best.resolve()
    if progress.best_epoch and elsewhere and source_best.is_file():
        copy_checkpoint(source_best, checkpoints.best)
    if progress.best_epoch and not checkpoints.best.is_file():
        forget_lost_best(resume, state, checkpoints)
    if progress.epoch >= epochs:
        if checkpoints.write and resume.path.resolve() != checkpoints.last.resolve():
            copy_checkpoint(resume.path, checkpoints.last)  # the new directory is a whole run: resumable too
        log.info(
            f"{resume.path}: all {epochs:g} epochs are trained, nothing left to train: testing its best weights"
        )


def forget_lost_best(resume: Resume, state: TrainState, checkpoints: Checkpoints) -> None:
    """No best.pt beside `resume`: the resumed epoch's weights become the best so far (a checkpoint taken
    mid-epoch has none, and the epochs to come choose)."""
    progress = state.progress
    closed_epoch = state.tally is None and progress.epoch > 0
    log.warning(f"no best.pt of epoch {progress.best_epoch} beside {resume.path}: "
                f"the best is chosen from epoch {progress.epoch if closed_epoch else progress.epoch + 1} on")  # fmt: skip
    progress.best_epoch, progress.best_val_acc = 0, -1.0
    if closed_epoch:
        progress.best_epoch = progress.epoch
        progress.best_val_acc = progress.history[-1].get("val/acc", -1.0) if progress.history else -1.0
        checkpoints.save(state.state_dict(), best=True)


def train_built(
    setup: Setup,
    cfg: DictConfig,
    run_dir: Path,
    resume: Resume | None = None,
    hparams: tuple[str, dict[str, Any]] | None = None,
    on_epoch_end: Sequence[EpochEnd] = (),
) -> dict[str, Any]:
    """Train what `build(cfg)` made (from `resume`, a checkpoint, if given), test it, write metrics.json.

    `hparams` (a name and values) become the run's row in TensorBoard's HParams view; `on_epoch_end` is fit's."""
    state = setup.state
    example = next(iter(setup.test_batches))[0][:1].clone()  # (1, 1, 28, 28)
    layers = model_summary(state.model, example)
    log.info(describe(setup, cfg) + f"\nmodel summary:\n{layers}")
    main = distributed.is_main()  # under DDP, rank 0 alone writes checkpoints, TensorBoard and metrics.json
    checkpoints = Checkpoints(run_dir / CHECKPOINTS, write=main)
    if resume is not None:
        continue_from(resume, state, checkpoints, cfg.trainer.epochs)
    origin = provenance(setup.device)
    classes, mean_std = list(cfg.data.classes), (cfg.data.mean, cfg.data.std)
    agree = None if distributed.current() is None else partial(distributed.largest, device=state.device)
    with RunLog(run_dir, cfg.trainer.histograms_every, classes, mean_std, write=main) as run_log:
        if resume is None:  # once per run, not again on resume
            run_log.start(state.model, example, texts(cfg, layers, origin))
            run_log.training_images(state.train_batches.preview(64, seed=cfg.seed))
        progress = fit(state, setup.val_batches, epochs=cfg.trainer.epochs, checkpoints=checkpoints,
                       run_log=run_log, stop=StopRequests(cfg.trainer.max_steps, agree), on_epoch_end=on_epoch_end)  # fmt: skip
        if not main:
            return {}  # rank 0 tests the job's model and writes the results
        with stopping_at_once("during the final test", checkpoints.last):
            test, predictions, final_test_acc = final_evaluation(
                state, setup.test_batches, checkpoints, run_log, progress.epoch
            )
        if hparams is not None:
            run_log.hparams(*hparams)
    seconds = progress.train_seconds
    metrics = {
        "model": type(state.model).__name__,
        "parameters": sum(p.numel() for p in state.model.parameters()),
        "epochs": cfg.trainer.epochs,
        "best_epoch": progress.best_epoch,
        "best_val_acc": max(progress.best_val_acc, 0.0)
        if setup.val_batches is not None
        else None,  # None: not validated
        "test_loss": test.loss,
        "test_acc": test.accuracy,
        "final_test_acc": final_test_acc,  # the last epoch's weights (test_acc: the best validated epoch's)
        "test_class_acc": class_accuracy(predictions, classes),
        "train_seconds": seconds,
        "images_per_second": progress.train_images / seconds if seconds else 0.0,
        "compile_seconds": setup.compile_seconds,
        "device": str(setup.device),
        "threads": setup.threads,
        "seed": cfg.seed,
        **origin,
        "history": progress.history,
    }
    write_json(metrics, run_dir / "metrics.json")
    return metrics


def class_accuracy(predictions: SetPredictions, classes: list[str]) -> dict[str, float]:
    """The test accuracy of each class, by name (metrics.json; the report names the weakest)."""
    matrix = confusion_matrix(predictions.predicted, predictions.labels, len(classes))
    return dict(zip(classes, per_class_accuracy(matrix).tolist(), strict=True))


def describe(setup: Setup, cfg: DictConfig) -> str:
    """The run's first log line: model, device, threads, memory format, eager or compiled, precision, data sizes,
    epochs."""
    model, threads = setup.state.model, setup.threads
    parameters = sum(p.numel() for p in model.parameters())
    path = "eager" if setup.compile_seconds is None else f"compiled ({cfg.trainer.compile_mode})"
    val_images = setup.val_batches.num_images if setup.val_batches is not None else "no"
    line = (
        f"{type(model).__name__} ({parameters:,} parameters) on {setup.device}, {threads} thread{'s' if threads > 1 else ''}"
        f"{', channels_last' if setup.channels_last else ''}, {path}, {cfg.trainer.precision}: "
        f"{setup.state.train_batches.num_images} training, {val_images} validation, "
        f"{setup.test_batches.num_images} test images; {cfg.trainer.epochs:g} epochs of {len(setup.state.train_batches)} steps"
    )
    if setup.val_batches is None:
        line += "\nno validation split (data.validation_size=0): best.pt is the last epoch's weights"
    if setup.compile_seconds is not None:
        line += (
            f"\ntorch.compile (mode {cfg.trainer.compile_mode}) warm-up: {setup.compile_seconds:.1f} s "
            "(not counted in the epoch times)"
        )
    return line


def texts(cfg: DictConfig, layers: str, origin: dict[str, Any]) -> dict[str, str]:
    """The Markdown texts a run shows in TensorBoard: its config, model summary and provenance."""
    return {
        "config": "```yaml\n" + OmegaConf.to_yaml(cfg, resolve=True) + "```",
        "model_summary": "```\n" + layers + "\n```",
        "provenance": "\n".join(f"- **{key}**: `{value}`" for key, value in origin.items()),
    }


def summary(metrics: dict[str, Any], run_dir: Path) -> str:
    """The few lines a user reads at the end of a run."""
    tensorboard = shutil.which("tensorboard") or str(Path(sys.executable).with_name("tensorboard"))
    return "\n".join(
        [
            f"{metrics['model']} ({metrics['parameters']:,} parameters) on {metrics['device']}: "
            f"{metrics['epochs']} epochs, {metrics['train_seconds']:.1f} s of training "
            f"({metrics['images_per_second']:,.0f} images/s)",
            f"  test accuracy        {metrics['test_acc']:.2%}  (loss {metrics['test_loss']:.4f}, "
            f"weights of epoch {metrics['best_epoch']}){last_epoch(metrics)}",
            f"  best val. accuracy   {validated(metrics['best_val_acc'])}",
            f"  run directory        {run_dir}",
            f"  TensorBoard          {tensorboard} --logdir {run_dir}",
        ]
    )


def last_epoch(metrics: dict[str, Any]) -> str:
    """The last epoch's test accuracy, where the best validated epoch is an earlier one."""
    best, final, history = metrics["best_epoch"], metrics.get("final_test_acc"), metrics["history"]
    if final is None or not best or not history or best == history[-1]["epoch"]:
        return ""
    return f"; the last epoch's weights {final:.2%}"


def validated(accuracy: float | None) -> str:
    """A best validation accuracy as the summary shows it; None: the run had no validation split."""
    return "none: no validation split (data.validation_size=0)" if accuracy is None else f"{accuracy:.2%}"


def run_hparams(cfg: DictConfig, job: Job) -> tuple[str, dict[str, Any]]:
    """The run's row in TensorBoard's HParams view: named by the overrides that define it, with the config
    groups chosen, HPARAM_KEYS and every overridden value."""
    overrides = identity(job.overrides)
    values: dict[str, Any] = {group: job.choices.get(group) for group in HPARAM_GROUPS}
    for key in [*HPARAM_KEYS, *(override_key(o) for o in overrides)]:
        values.setdefault(key, OmegaConf.select(cfg, key, default=None))
    plain = {key: v if isinstance(v, bool | int | float | str) else str(v) for key, v in values.items()}
    return " ".join(overrides) or "defaults", plain


def epoch_end_callables(cfg: DictConfig, job: Job) -> list[EpochEnd]:
    """What this run does after each epoch besides logging: keep status.json current; in a trial of
    `python tune.py`, report to the study (which may prune the run)."""

    def record(epoch: int, val: EpochStats | None) -> None:
        job.status("running", epoch=epoch, val_acc=val.accuracy if val else None)

    callables: list[EpochEnd] = [record]
    tune = cfg.get("tune")
    if tune is not None and tune.get("trial") is not None:
        from mnist_lab.search.trial import trial_reporter  # optuna loads only in a search's trials

        callables.append(trial_reporter(tune))
    return callables


def main(cfg: DictConfig) -> float | None:
    """Hydra's main: one run, or one job of a sweep; returns the best validation accuracy (None if the run
    did not complete)."""
    hydra = HydraConfig.get()
    in_sweep = hydra.mode == RunMode.MULTIRUN
    job = Job(Path(hydra.runtime.output_dir), list(hydra.overrides.task), hydra.job.num if in_sweep else None,
              dict(hydra.runtime.choices))  # fmt: skip
    rank = distributed.current() or join_slurm_job(hydra.launcher.get("tasks_per_node", 1))
    if rank is None:
        return run_job(cfg, job)
    label_logs(rank)
    try:
        return run_job(cfg, job)
    finally:
        distributed.stop()


def run_job(cfg: DictConfig, job: Job) -> float | None:
    """Run `job` in its run directory, which this process owns for the run (lab/ownership.py; rank 0 alone
    under DDP), with status.json kept up to date; a failure ends a single run (RunFailed) but only this job of
    a sweep."""
    if not distributed.is_main():
        return run_owned_job(cfg, job)
    continuing = "auto" if job.in_sweep and cfg.resume_sweep else cfg.resume
    key = "hydra.sweep.dir" if job.in_sweep else "hydra.run.dir"
    try:
        with owned(job.run_dir, continuing, key):
            return run_owned_job(cfg, job)
    except DirectoryTaken as taken:
        if not job.in_sweep:
            raise
        log.error(f"error: job {job.number}: {taken}")  # its status.json, if any, is the other run's
        return None


def run_owned_job(cfg: DictConfig, job: Job) -> float | None:
    """`run_job` once the run directory is this process's."""
    resume_from = None
    if job.in_sweep and cfg.resume_sweep:
        earlier = earlier_job(job.run_dir, job.overrides)
        if earlier.refusal:
            return failed(job, earlier.refusal, 2)
        if earlier.completed:
            log.info(f"job {job.number} [{' '.join(identity(job.overrides))}] completed before: skipped")
            return earlier.completed.get("best_val_acc")
        resume_from = earlier.checkpoint  # a stopped job continues from its last.pt
    try:
        job.status("running")
        with stopping_at_once("before training began"):
            setup, resume = prepare(cfg, job.run_dir, job.number, resume_from)
            on_epoch_end = epoch_end_callables(cfg, job)
    except TrainingStopped as stop:
        return stopped(job, stop)
    except WriteFailed as error:
        return write_failed(job, error)
    except USER_ERRORS as error:  # a bad value or file: one line saying which, no traceback
        return failed(job, user_message(error), 2)
    try:
        metrics = train_built(setup, cfg, job.run_dir, resume, run_hparams(cfg, job), on_epoch_end)
    except TrainingStopped as stop:
        return stopped(job, stop)
    except Pruned as pruned:
        job.status("pruned", reason=str(pruned))
        log.info(str(pruned))
        return None
    except NonFiniteLoss as error:
        return failed(job, str(error), 1)
    except WriteFailed as error:
        return write_failed(job, error)
    except Exception as error:  # out of memory, a bug: recorded with its traceback, the sweep goes on
        if distributed.lost_contact(error):  # under DDP: another rank died or stopped answering
            return failed(job, lost_rank(error, job), 1)
        return failed(job, f"{type(error).__name__}: {error}", 1, traceback.format_exc())
    if not metrics:  # a DDP rank but 0: rank 0 tested and wrote the results
        return None
    try:
        job.status("completed", best_val_acc=metrics["best_val_acc"],
                   test_acc=metrics["test_acc"], metrics=str(job.run_dir / "metrics.json"))  # fmt: skip
    except WriteFailed as error:
        return write_failed(job, error)
    log.info("%s", summary(metrics, job.run_dir))
    return metrics["best_val_acc"]


def lost_rank(error: Exception, job: Job) -> str:
    """The line a DDP rank ends with when the job lost another rank: which rank this is, what the backend said,
    and what was saved."""
    rank = distributed.current()
    said = re.sub(r"^\[[^\]]*\] ", "", str(error).strip()).split(". This is typically")[0][:200]  # gloo's
    last = job.run_dir / CHECKPOINTS / "last.pt"
    kept = f"resume from {last} with: {resume_command(job, last)}" if last.exists() else "nothing saved yet"
    assert rank is not None  # lost_contact() said so
    return f"rank {rank.rank} of {rank.world}: the job lost another rank ({distributed.lost_ranks(error)}: {said}); {kept}"


def resume_command(job: Job, checkpoint: Path | None) -> str:
    """The command that continues `job` from `checkpoint` (None, nothing saved: in its directory with
    resume=auto; a DDP job: through torchrun again), without trainer.max_steps, which would stop it again at
    once."""
    again = [o for o in job.overrides if override_key(o) not in ("resume", "trainer.max_steps")]
    resume = [f"resume={checkpoint}"] if checkpoint else ["resume=auto", f"hydra.run.dir={job.run_dir}"]
    return f"{launch_command(distributed.current())} train.py {' '.join([*again, *resume])}"


def launch_command(rank: distributed.Rank | None) -> str:
    """What starts train.py as this job did: python, torchrun on one node, or torchrun on each of several nodes
    (each with its own --node_rank; the rendezvous address as this job had it)."""
    if rank is None:
        return "python"
    if rank.world == rank.local_world:
        return f"torchrun --nproc_per_node={rank.local_world}"
    nodes, node = rank.world // rank.local_world, rank.rank // rank.local_world
    address = f"--master_addr={os.environ.get('MASTER_ADDR', '<node 0>')} --master_port={os.environ.get('MASTER_PORT', 29500)}"
    return (
        f"(on each of the {nodes} nodes, with its own --node_rank; this is node {node}) "
        f"torchrun --nnodes={nodes} --node_rank={node} --nproc_per_node={rank.local_world} {address}"
    )


def write_failed(job: Job, error: WriteFailed) -> None:
    """A file of the run could not be written (a full disk: exit 1; a path the user chose: 2): say so, what is
    still saved, and how to go on."""
    last = job.run_dir / CHECKPOINTS / LAST
    kept = (
        f"{last} is intact; when there is room again, resume with: {resume_command(job, last)}"
        if last.is_file()
        else "no checkpoint was saved yet"
    )
    return failed(job, f"{error}; {kept}", 1 if error.disk_full else 2)


def failed(job: Job, message: str, exit_code: int, details: str | None = None) -> None:
    """Record a failed run: the message (and traceback, into train.log) logged, status.json; a single run
    raises RunFailed, a sweep's job returns (the sweep goes on)."""
    log.error(f"error: {message}")
    if details:
        log.error(details)
    try:
        job.status("failed", error=message, exit_code=exit_code)
    except WriteFailed as error:  # the same full disk: the line above is what the user reads
        log.warning(f"status.json not updated: {error.reason}")
    if not job.in_sweep:
        raise RunFailed(message, exit_code)


def stopped(job: Job, stop: TrainingStopped) -> None:
    """Record a stopped run and say how to resume it; a signal raises RunStopped (it stops the whole sweep), except
    in a SLURM job, where it came to this job alone."""
    job.status("stopped", reason=stop.reason, checkpoint=str(stop.checkpoint) if stop.checkpoint else None)
    log.warning(str(stop))
    if job.in_sweep:
        log.warning("resume the sweep with the same command and resume_sweep=last (or its directory)")
        # trainer.max_steps, or SLURM stopping this one job (scancel, its time limit): the sweep goes on
        if stop.exit_code == 0 or os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
            return
    elif stop.checkpoint is not None:
        log.warning(f"resume with: {resume_command(job, stop.checkpoint)}")
    else:
        log.warning(f"start it again with: {resume_command(job, None)}")
    raise RunStopped(str(stop), stop.exit_code)  # a signal: the whole sweep stops
