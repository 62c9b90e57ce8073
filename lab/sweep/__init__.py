"""What a sweep (`python train.py -m ...`) needs around its jobs: Hydra callbacks (callbacks.py), resuming a
sweep (resume.py), and Ray around hydra-ray-launcher (ray_jobs.py)."""
