"""mnist-lab's Hydra plugins: Hydra instantiates launchers only from the hydra_plugins package."""
