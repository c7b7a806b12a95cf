"""The review queue: merchandisers verify tags on a web page; answers flow back.

store     the database (SQLite WAL or PostgreSQL): items, claims, skips, append-only answers
queue     fill the queue from published days (needs_review rows + an audit slice)
service   claim, answer, skip, undo, status (what the page and the API do)
app, api  the FastAPI page (templates/, static/) and the JSON API (/docs)
photos    a queued row's photo, type sniffed from its bytes
server    the app from the environment (uvicorn), `tagging review serve`
export    each day's winning answers -> <catalogue>/reviews/dt=D/answers.parquet (read by
          the catalogue and the label store: tagging.catalogue.answers)
"""
