"""Training machinery that distill and snr share: the losses, the training rows and their
collation, the micro-batch forward, checkpoints, learning-rate schedules and the accelerate
launch wrapper."""
