"""One encoder per modality, each a backbone plus masked pooling: inputs -> (B, D_backbone)."""
