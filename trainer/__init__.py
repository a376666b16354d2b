"""visact's trainer: the PPO learner that fine-tunes the VLM from the agents' trajectories."""
