"""The one-command demo: synthetic world -> stage 1 -> stage 2 -> evaluation -> report."""
