"""Losses, alternating multi-task updates, checkpoints and the training loops of each stage."""
