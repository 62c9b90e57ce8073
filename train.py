"""Train an MNIST classifier from the Hydra configs in configs/.

python train.py                                   # LeNet-5, the defaults of configs/config.yaml
python train.py model=lenet_res trainer.epochs=3  # any config value can be overridden
python train.py -m model=lenet,lenet_res,resmlp   # a multirun: one run directory per job

Every run leaves status.json in its run directory (running, completed, failed, stopped or pruned). In a
multirun a job that fails is recorded as failed and the others go on; the sweep exits non-zero at the end.
"""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import mnist_lab.config  # noqa: F401  (registers the resolvers the configs use)
from mnist_lab import cli, ddp, shell


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """One run, or one job of a sweep (mnist_lab.shell)."""
    return cli.keeping_outcome(lambda: shell.main(cfg), HydraConfig.get().mode == RunMode.RUN)


if __name__ == "__main__":
    try:  # under torchrun: join the job, and give every rank rank 0's run directory
        sys.argv[1:] = ddp.rank_argv(sys.argv[1:])
    except ValueError as error:
        cli.fail(str(error))
    except RuntimeError as error:  # the process group could not be formed: the machine's or the network's
        said = " ".join(str(error).split())[:300]
        cli.fail(f"could not join the DDP job (MASTER_ADDR, MASTER_PORT from torchrun): {said}", 1)
    cli.run_hydra(main)
