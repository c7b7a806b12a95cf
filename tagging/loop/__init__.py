"""The learning loop's data: harvesting verified labels (and review answers) into the label
store, its training view, the holdout comparison, and what a version trained on and expects
(live quality itself: tagging.catalogue.quality; the loop's steps: tagging.pipeline.learn)."""
