"""The review app from the environment: `tagging review serve`, or uvicorn directly::

    python -m uvicorn --factory tagging.review.server:app_from_env --host 127.0.0.1
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from tagging.catalogue.layout import image_root_for
from tagging.review.app import create_app
from tagging.review.service import ReviewService
from tagging.review.store import ReviewStore
from tagging.settings import ReviewSettings, Settings


def open_service(catalogue: Path | str | None = None, db: str | None = None) -> ReviewService:
    """The store and the catalogue the settings name (or `catalogue` / `db`)."""
    settings = Settings.from_env()
    review = ReviewSettings.from_env()
    root = Path(catalogue) if catalogue else settings.catalogue_root
    store = ReviewStore(db or review.db_for(root))
    return ReviewService(store, root, image_root_for(root, settings), review)


def app_from_env(single_user: str | None = None) -> FastAPI:
    return create_app(open_service(), single_user=single_user)


def serve(service: ReviewService, *, host: str = "127.0.0.1", port: int = 8000,
          single_user: str | None = None, root_path: str = "") -> None:
    """Serve the page and the API until interrupted (uvicorn, one process); `root_path`:
    the path the proxy serves it under (e.g. /review)."""
    import uvicorn

    uvicorn.run(create_app(service, single_user=single_user), host=host, port=port,
                root_path=root_path, proxy_headers=False, server_header=False,
                log_level="info")
