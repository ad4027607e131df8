"""Training: state and optimizer, the one train step, checkpoints and the stage driver."""
