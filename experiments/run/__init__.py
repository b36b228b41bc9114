"""The run layer: a run in its workdir and what is done to it (meta-training, scoring, adaptation, fine-tuning,
magnitude pruning, export, a grid of runs); the launch scripts in experiments/ are its command lines."""
