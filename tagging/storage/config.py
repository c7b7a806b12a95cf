"""Object storage configuration: only the standard AWS_* environment variables, read when a
client is made; the secrets are never logged, never put in an error message and never
returned by anything but the client factories (tagging.storage.objects, .arrow) and
`delta_options`."""

from __future__ import annotations

import os
from dataclasses import dataclass

from tagging.storage.roots import Root, as_root

# The standard variables a client reads; nothing else configures object storage.
ENDPOINT, KEY_ID, SECRET = "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"
TOKEN, REGION, ALLOW_HTTP = "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ALLOW_HTTP"
DEFAULT_REGION = "us-east-1"
# A request is retried MAX_RETRIES times with backoff from 100 ms doubling up to 2 s (a
# server restarting answers 500 or refuses for a few seconds): about 6 s, then an error.
CONNECT_TIMEOUT_S, REQUEST_TIMEOUT_S, MAX_RETRIES, MAX_BACKOFF_S = 5, 60, 6, 2


@dataclass(frozen=True)
class S3Config:
    """What the AWS_* variables say; `repr` hides the secrets."""

    endpoint: str | None
    key_id: str | None
    secret: str | None
    token: str | None
    region: str
    allow_http: bool

    def __repr__(self) -> str:
        return f"S3Config(endpoint={self.endpoint!r}, region={self.region!r})"

    @property
    def where(self) -> str:
        return self.endpoint or f"AWS S3 ({self.region})"


def s3_config(env: dict[str, str] | None = None) -> S3Config:
    env = os.environ if env is None else env
    return S3Config(endpoint=env.get(ENDPOINT) or None, key_id=env.get(KEY_ID) or None,
                    secret=env.get(SECRET) or None, token=env.get(TOKEN) or None,
                    region=env.get(REGION) or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION,
                    allow_http=(env.get(ALLOW_HTTP) or "").lower() in ("1", "true", "yes"))


def delta_options(root: Root | str) -> dict[str, str]:
    """deltalake `storage_options` for a root (empty for a local one)."""
    if not as_root(root).is_remote:
        return {}
    config = s3_config()
    options = {"AWS_REGION": config.region, "AWS_ALLOW_HTTP": str(config.allow_http).lower(),
               "timeout": f"{REQUEST_TIMEOUT_S}s", "connect_timeout": f"{CONNECT_TIMEOUT_S}s",
               "max_retries": str(MAX_RETRIES), "retry_timeout": f"{REQUEST_TIMEOUT_S}s",
               "backoff_config.init_backoff": "100ms",
               "backoff_config.max_backoff": f"{MAX_BACKOFF_S}s", "backoff_config.base": "2"}
    for key, value in ((ENDPOINT, config.endpoint), (KEY_ID, config.key_id),
                       (SECRET, config.secret), (TOKEN, config.token)):
        if value:
            options[key] = value
    return options
