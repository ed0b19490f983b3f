"""mmrec's Hydra configs, installed as the package mmrec.conf (see pyproject.toml)."""
