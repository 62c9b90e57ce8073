"""hydra/launcher=ray (configs/hydra/launcher/ray.yaml): a sweep's jobs as Ray tasks.

hydra-ray-launcher's RayLauncher, whose `launch` this replaces to add what the plugin leaves to its users
(lab/sweep/ray_jobs.py): Ray started without the setting that breaks `init.address`, a job no node could hold
refused up front, a job whose Ray worker dies recorded as failed while the sweep goes on, and Ctrl-C or SIGTERM
passed on to the running jobs so that each saves last.pt. Each job is still submitted by the plugin's own
`launch_job_on_ray`. Without the `ray` extra this module defines nothing (lab.sweep.callbacks says what to install).
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from omegaconf import open_dict

from mnist_lab.status import read_status
from mnist_lab.sweep import ray_jobs

try:
    from hydra_plugins.hydra_ray_launcher import ray_launcher
except ImportError:  # the `ray` extra is not installed
    ray_launcher = None

if ray_launcher is not None:

    class RayLauncher(ray_launcher.RayLauncher):
        """hydra-ray-launcher's launcher with resources checked, dead workers contained and signals passed on."""

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
            assert (
                self.config is not None and self.hydra_context is not None and self.task_function is not None
            )
            setup_globals()
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            ray_jobs.start(self.ray_cfg)
            from hydra_plugins.hydra_ray_launcher._launcher_util import launch_job_on_ray  # imports Ray

            jobs: dict[Any, ray_jobs.RayJob] = {}  # Ray's reference to each job's result -> the job
            for num, overrides in enumerate(job_overrides, start=initial_job_idx):
                config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
                with open_dict(config):
                    config.hydra.job.id, config.hydra.job.num = f"ray_{num}", num
                run_dir = Path(config.hydra.sweep.dir) / str(config.hydra.sweep.subdir)
                ray_jobs.log.info(f"\t#{num} : {' '.join(filter_overrides(overrides))}")
                ref = launch_job_on_ray(self.hydra_context, self.ray_cfg.remote, config, self.task_function,
                                        Singleton.get_state())  # fmt: skip
                jobs[ref] = ray_jobs.RayJob(run_dir, list(overrides), read_status(run_dir))
            return ray_jobs.collect(jobs)
