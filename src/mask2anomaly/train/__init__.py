"""Training of both stages: losses, matcher, point sampling, optimiser and schedule, the outlier
(contrastive) loss, one step, the run folder and the trainer loop."""
