"""Other formats in and out: generated PyTorch source, build folders, NIR, DeepEISNN checkpoints,
and the parity check against the reference."""
