"""Lightning glue: the LightningModule, the frozen-encoder cache and the optimiser set-up."""
