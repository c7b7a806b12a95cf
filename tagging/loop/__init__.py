"""The learning loop: label store, holdout, live quality, the loop's steps."""
