"""The config-aware layer: turns a Hydra config into plain objects for trainer/, data/ and models/, and a run
directory (status, metrics, checkpoints) around them. Entry points call it; it never calls them."""
