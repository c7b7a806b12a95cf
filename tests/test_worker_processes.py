"""Tagging inside a daemonic worker process (what a Celery prefork pool hands a task)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path


def _start_tagger(errors) -> None:
    import numpy as np

    from tagging.catalogue.tagger import Tagger
    from tagging.model.inference import Classifier

    untrained = Classifier([np.zeros((784, 10), np.float32)], [np.zeros(10, np.float32)])
    try:
        Tagger(untrained, image_root=Path("."))  # fails before using it
    except Exception as e:
        errors.put(f"{type(e).__name__}: {e}")
    else:
        errors.put(None)


def test_tagger_in_a_daemonic_process_says_which_celery_pool_to_use():
    context = multiprocessing.get_context("fork")
    errors = context.Queue()
    worker = context.Process(target=_start_tagger, args=(errors,), daemon=True)
    worker.start()
    message = errors.get(timeout=60)
    worker.join(60)
    assert message is not None
    assert message.startswith("TaggingError: cannot start the decoding processes")
    assert "AIRFLOW__CELERY__POOL=solo" in message
