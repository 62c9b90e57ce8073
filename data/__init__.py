"""MNIST sources (torchvision IDX files, pickles), their validation, fetching, and the in-memory batch loader."""
