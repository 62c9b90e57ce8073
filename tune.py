"""Search hyperparameters with Optuna, pruning hopeless trials after each epoch.

python tune.py hparams_search=lenet                      # the search space of configs/hparams_search/lenet.yaml
python tune.py hparams_search=resmlp tune.trials=40 tune.jobs=2 data.train_subset=20000

Every other override applies to every trial. A trial is an ordinary run, `python train.py <your overrides>
<the trial's values>`, in its own run directory <tune.dir>/trial-<n>; after each epoch it reports its
validation accuracy to the study, whose pruner may stop it. The study is kept in <tune.dir>/study.db, so
running the same command again continues it (until `tune.trials` trials have finished; raise it to go on).
At the end: the best trials, the command that trains the best one, and <tune.dir>/best.json.
"""

from mnist_lab import cli
from mnist_lab.config import compose
from mnist_lab.search.driver import search


def main(argv: list[str]) -> int:
    return search(compose(*argv), argv)


if __name__ == "__main__":
    cli.run(main)
