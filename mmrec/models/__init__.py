"""Plain PyTorch models: encoders, fusion, towers (no Lightning or Hydra imports here)."""
