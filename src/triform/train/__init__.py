"""Training: the configuration, the session (tokenizer, objective, data), the trainer and its
reporters, checkpoints, several processes, evaluation. `train.run.train` runs a whole training."""
