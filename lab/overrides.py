"""Command-line overrides as strings: the key one sets, a script's own arguments apart from config overrides,
and the identity of a job (its overrides, less those that only say how to run it). Plain string work, no
imports of the project: status, sweeps, search and config all lean on it."""

# Keys that say how to run a job, not what it trains: two jobs that differ only in these (or in hydra.*)
# are the same job.
HOW_TO_RUN = {"resume", "resume_sweep", "trainer.max_steps", "trainer.threads", "trainer.device"}


def override_key(override: str) -> str:
    """The key an override sets: `+trainer.x=1` -> `trainer.x`, `~seed` -> `seed`."""
    return override.lstrip("+~").split("=", 1)[0]


def split_args(argv: list[str], own: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    """A script's own `key=value` arguments, and the rest: config overrides (`data=mnist_pickle`)."""
    mine = {override_key(a): a.split("=", 1)[1] for a in argv if "=" in a and override_key(a) in own}
    return mine, [a for a in argv if override_key(a) not in own]


def defining_overrides(overrides: list[str]) -> list[str]:
    """The overrides that define what a job trains (sorted), without those that only say how to run it."""
    keys = {o: override_key(o) for o in overrides}
    return sorted(o for o, key in keys.items() if key not in HOW_TO_RUN and not key.startswith("hydra."))
