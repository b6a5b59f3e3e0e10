"""The console's auth: a principal's API token, kept in an HttpOnly cookie, and a CSRF token derived from it.

Why the token itself and no session store: the master is stateless (no cookie session, any master serves
any request), and the console must grant exactly what the API grants that principal (master/ui/views.py
checks its role per action). The cookie is HttpOnly (no script reads it), SameSite=Strict (no cross-site
request carries it) and scoped to /ui. Every state-changing form also carries a CSRF token, HMAC-SHA256 of a
fixed label under that principal's token: a page on another site cannot compute it without the token, and
nothing is stored on the server to check it against.
"""

from __future__ import annotations

import hashlib
import hmac

from flask import Request

COOKIE = "titus_ui_token"
CSRF_FIELD = "csrf_token"
_CSRF_LABEL = b"titus-ui-csrf-v1"


def csrf_token(api_token: str) -> str:
    return hmac.new(api_token.encode(), _CSRF_LABEL, hashlib.sha256).hexdigest()


def csrf_valid(request: Request, api_token: str) -> bool:
    """A POST is accepted only with the form's CSRF token and, when the browser says, from this origin."""
    origin = request.headers.get("Origin")
    if origin and origin != request.host_url.rstrip("/"):
        return False
    presented = request.form.get(CSRF_FIELD, "")
    return bool(presented) and hmac.compare_digest(presented, csrf_token(api_token))
