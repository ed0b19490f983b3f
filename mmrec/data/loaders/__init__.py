"""Dataset loaders: each turns one public or native layout into a RecDataset."""
