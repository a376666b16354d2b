"""visact's agent side: hosts the VLM, builds prompts, parses actions, runs rollouts."""
