"""The Optuna search behind tune.py: the study both sides share (study.py), the driver (driver.py), and the
trial's reporter inside its run (trial.py)."""
