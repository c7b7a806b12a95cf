"""The learning loop's data: harvesting verified labels into the label store, its training
view, the holdout comparison and live quality (the loop's steps: tagging.pipeline.learn)."""
