"""Training and evaluation of compiled networks: trainer, settings, metrics, probes, checkpoints,
several processes, and sweeps over settings."""
