"""Training the decoder: the settings, the loss, the loop, the run folder, several processes,
the feature cache."""
