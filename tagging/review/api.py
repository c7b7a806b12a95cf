"""The review queue's HTTP API (JSON), for other tools: a PIM, a script.

Documented at /docs (FastAPI's OpenAPI page). Every call needs the reviewer's identity
(the sign-in proxy's header); POSTs from a browser on another origin are refused.
"""


import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field

from tagging.review.service import ReviewService, UnknownProduct, item_json
from tagging.review.store import ANSWERS

Answer = Literal[ANSWERS]  # type: ignore[valid-type]  # the slugs and "unusable", in /docs


class Verification(BaseModel):
    """A reviewer's answer about one published product."""

    partition: str = Field(description="the published day, YYYY-MM-DD",
                           examples=["2026-11-27"])
    product_id: str = Field(examples=["sku-123"])
    category: Answer = Field(description="a category slug, or 'unusable' for a photo that "
                                         "does not show one product")


def api_router(reviewer: Any) -> APIRouter:
    """The /api routes; `reviewer` is the dependency that names the caller (401 without)."""
    router = APIRouter(prefix="/api", tags=["review"])
    Reviewer = Annotated[str, Depends(reviewer)]

    def service(request: Request) -> ReviewService:
        return request.app.state.service

    Service = Annotated[ReviewService, Depends(service)]

    @router.get("/queue", summary="Claim photos to review")
    def queue(request: Request, who: Reviewer, svc: Service,
              limit: Annotated[int, Query(ge=1, le=100)] = 10) -> dict[str, Any]:
        """Claim up to `limit` photos for the caller (their current claims first). Nobody
        else is handed them until the lease expires or they are answered."""
        items = svc.claim(who, limit)
        return {"reviewer": who, "lease_s": svc.settings.lease_s,
                "items": [item_json(i, str(request.scope.get("root_path", "")).rstrip("/"))
                          for i in items]}

    @router.post("/verifications", status_code=201, summary="Answer about a product",
                 responses={404: {"description": "no such published product"},
                            422: {"description": "not a category slug nor 'unusable'"}})
    def verify(body: Verification, who: Reviewer, svc: Service) -> dict[str, Any]:
        """Record the caller's answer (append-only; the latest answer per product wins)."""
        try:
            record = svc.answer(who, body.partition, body.product_id, body.category)
        except UnknownProduct as e:
            raise HTTPException(404, str(e)) from None
        return answer_json(record)

    @router.post("/undo", summary="Take back the caller's last answer",
                 responses={404: {"description": "nothing to undo"}})
    def undo(who: Reviewer, svc: Service) -> dict[str, Any]:
        """Append a retraction of the caller's latest answer in force (nothing is deleted);
        the photo goes back to the caller."""
        record = svc.undo(who)
        if record is None:
            raise HTTPException(404, "nothing to undo")
        return {"retracted": answer_json(record)}

    @router.get("/status", summary="Queue length and answers today")
    def status(who: Reviewer, svc: Service) -> dict[str, Any]:
        """Open items, answers today per reviewer, answers in force, disagreements."""
        return svc.status()

    return router


def answer_json(record: dict[str, Any]) -> dict[str, Any]:
    return {"id": record["id"], "reviewer": record["reviewer"],
            "answered_at": record["answered_at"], "partition": record["partition"],
            "product_id": record["product_id"], "category": record["answer"],
            "model_version": record["model_version"],
            "top3": json.loads(record["top3"]) if record["top3"] else []}
