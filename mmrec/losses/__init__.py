"""Plain PyTorch losses for two-tower training (no Lightning or Hydra imports here)."""
