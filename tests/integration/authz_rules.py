"""Who may call each route: one rule per (method, path template) of the app that
``maas-base start`` serves, the control plane and the gateway's ``/v1`` on one port.

A rule names the access class of the route, how to make a request that authorization
alone decides (a valid-looking body, parameters, which object a path parameter names)
and, rarely, exceptions for single principals. ``test_authorization_matrix`` sends every
route a request from every principal and compares the status with ``Rule.expected``.
Adding a route means adding one line to ``RULES``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Access(Enum):
    PUBLIC = "public"  # anyone, with or without credentials
    ADMIN = "admin"  # admin sessions; admin API keys with scope 'management' or 'all'
    MANAGEMENT = "management"  # any user's session or 'management'/'all' key; owner-filtered
    INFERENCE = "inference"  # API keys with scope 'inference' or 'all'; allowed models apply
    WORKER = "worker"  # a worker credential (mbw_...)
    GATEWAY = "gateway"  # a gateway identity
    REGISTRATION = "registration"  # the registration token only


class Outcome(Enum):
    ALLOWED = "allowed"  # got past authorization: any status but 401 and 403
    UNAUTHENTICATED = "401"
    FORBIDDEN = "403"
    REFUSED = "401 or 403"

    def accepts(self, status: int) -> bool:
        if self is Outcome.ALLOWED:
            return status not in (401, 403)
        if self is Outcome.REFUSED:
            return status in (401, 403)
        return status == int(self.value)


# Principals: who sends the request.
ANONYMOUS = "anonymous"
GARBAGE = "garbage bearer"
EXPIRED_KEY = "expired key"
REVOKED_KEY = "revoked key"
ADMIN_SESSION = "admin session"
ADMIN_COOKIE = "admin session cookie"
ADMIN_KEY_ALL = "admin key all"
ADMIN_KEY_MANAGEMENT = "admin key management"
ADMIN_KEY_INFERENCE = "admin key inference"
USER_SESSION = "user session"
USER_KEY_ALL = "user key all"
USER_KEY_MANAGEMENT = "user key management"
USER_KEY_INFERENCE = "user key inference"
USER_KEY_MODELS = "user key all, other models only"
WORKER = "worker"
GATEWAY = "gateway"
REGISTRATION_TOKEN = "registration token"

PRINCIPALS = (
    ANONYMOUS, GARBAGE, EXPIRED_KEY, REVOKED_KEY,
    ADMIN_SESSION, ADMIN_COOKIE, ADMIN_KEY_ALL, ADMIN_KEY_MANAGEMENT, ADMIN_KEY_INFERENCE,
    USER_SESSION, USER_KEY_ALL, USER_KEY_MANAGEMENT, USER_KEY_INFERENCE, USER_KEY_MODELS,
    WORKER, GATEWAY, REGISTRATION_TOKEN,
)  # fmt: skip

NO_CREDENTIAL = frozenset({ANONYMOUS, GARBAGE, EXPIRED_KEY, REVOKED_KEY})
API_KEYS = frozenset({
    ADMIN_KEY_ALL, ADMIN_KEY_MANAGEMENT, ADMIN_KEY_INFERENCE,
    USER_KEY_ALL, USER_KEY_MANAGEMENT, USER_KEY_INFERENCE, USER_KEY_MODELS,
})  # fmt: skip
_ADMINS = frozenset({ADMIN_SESSION, ADMIN_COOKIE, ADMIN_KEY_ALL, ADMIN_KEY_MANAGEMENT})
# Not USER_KEY_MODELS: the requests ask for a model outside its allowed models.
_INFERENCE = frozenset({ADMIN_KEY_ALL, ADMIN_KEY_INFERENCE, USER_KEY_ALL, USER_KEY_INFERENCE})

ALLOWED: Mapping[Access, frozenset[str]] = {
    Access.PUBLIC: frozenset(PRINCIPALS),
    Access.ADMIN: _ADMINS,
    Access.MANAGEMENT: _ADMINS | {USER_SESSION, USER_KEY_ALL, USER_KEY_MANAGEMENT, USER_KEY_MODELS},
    Access.INFERENCE: _INFERENCE,
    Access.WORKER: frozenset({WORKER}),
    Access.GATEWAY: frozenset({GATEWAY}),
    Access.REGISTRATION: frozenset({REGISTRATION_TOKEN}),
}


def refusal(access: Access, principal: str) -> Outcome:
    """How a principal outside ``ALLOWED[access]`` is turned away."""
    if principal in NO_CREDENTIAL:
        return Outcome.UNAUTHENTICATED
    if principal == REGISTRATION_TOKEN:
        return Outcome.REFUSED  # it only registers; refused as unknown or by name
    if access is Access.REGISTRATION:
        return Outcome.UNAUTHENTICATED  # the route checks the token itself
    if access is Access.INFERENCE and principal not in API_KEYS:
        return Outcome.UNAUTHENTICATED  # the inference API knows API keys only
    return Outcome.FORBIDDEN


@dataclass(frozen=True)
class Context:
    """What a request body may depend on: who sends it, a serial number, the objects the
    matrix created (``values``: ids, names, keys)."""

    principal: str
    serial: int
    values: Mapping[str, Any]


Body = Callable[[Context], Any]


@dataclass(frozen=True)
class Rule:
    access: Access
    json: Any = None  # the JSON body, or a function of the Context that returns it
    params: Mapping[str, Any] | None = None
    form: bool = False  # a multipart body with a 'model' field and a file
    ids: Mapping[str, str] = field(default_factory=dict)  # path parameter -> name in values
    exceptions: Mapping[str, Outcome] = field(default_factory=dict)
    # Cells go in phases: 1 after all of phase 0, 2 after phase 1 (for rules that change
    # what others rely on: rotating the registration token, ending sessions).
    phase: int = 0

    def expected(self, principal: str) -> Outcome:
        if principal in self.exceptions:
            return self.exceptions[principal]
        if principal in ALLOWED[self.access]:
            return Outcome.ALLOWED
        return refusal(self.access, principal)

    def body(self, context: Context) -> Any:
        return self.json(context) if callable(self.json) else self.json


# Request bodies ------------------------------------------------------------------------

MODEL = "matrix-model"  # the model inference requests ask for (not in USER_KEY_MODELS's list)
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
RERANK = {"model": MODEL, "query": "q", "documents": ["d"]}
SPEECH = {"model": MODEL, "input": "hi", "voice": "v"}
PASSWORD = "matrix-password-1"


def _new_user(context: Context) -> dict[str, Any]:
    return {"username": f"made-{context.serial}", "password": PASSWORD}


def _login(context: Context) -> dict[str, Any]:
    return {"username": context.values["user_name"], "password": PASSWORD}


def _new_key(context: Context) -> dict[str, Any]:
    """A key narrow enough that every key allowed to create keys may create it (a key
    never creates one wider than itself)."""
    narrow = {"scope": "management", "allowed_models": ["other-model"], "rpm_limit": 1,
              "tpm_limit": 1, "token_quota": 1}  # fmt: skip
    return {"name": f"made-{context.serial}", **narrow}


def _new_model(context: Context) -> dict[str, Any]:
    return {**context.values["model_body"], "name": f"made-{context.serial}"}


def _spec(context: Context) -> dict[str, Any]:
    return {k: v for k, v in context.values["model_body"].items() if k != "name"}


def _new_provider(context: Context) -> dict[str, Any]:
    return {"name": f"made-{context.serial}", "base_url": "http://127.0.0.1:9/v1",
            "models": ["remote"]}  # fmt: skip


def _registration(context: Context) -> dict[str, Any]:
    """A worker re-registers under its own name; anyone else registers a new worker."""
    name = context.values["worker_name"] if context.principal == WORKER else None
    return {**context.values["registration"], "name": name or f"made-{context.serial}"}


def _gateway_registration(context: Context) -> dict[str, Any]:
    """A gateway re-registers under its own name; anyone else registers a new gateway."""
    name = context.values["gateway_name"] if context.principal == GATEWAY else None
    return {"name": name or f"made-{context.serial}"}


def _heartbeat(context: Context) -> dict[str, Any]:
    return {"hardware": context.values["registration"]["hardware"]}


def _key_check(context: Context) -> dict[str, Any]:
    return {"key": context.values["checked_key"]}


A = Access
_LISTING = {USER_KEY_MODELS: Outcome.ALLOWED}  # listings are filtered, not refused
_REATTACH = Outcome.ALLOWED  # a worker's or gateway's own credential registers it again

RULES: Mapping[tuple[str, str], Rule] = {
    # health, docs, metrics
    ("GET", "/healthz"): Rule(A.PUBLIC),
    ("GET", "/readyz"): Rule(A.PUBLIC),
    ("GET", "/metrics"): Rule(A.MANAGEMENT),
    ("GET", "/api/openapi.json"): Rule(A.PUBLIC),
    ("GET", "/api/docs"): Rule(A.PUBLIC),
    ("GET", "/api/docs/assets/{name}"): Rule(A.PUBLIC),
    # sessions and users
    ("POST", "/api/v1/auth/login"): Rule(A.PUBLIC, json=_login),
    ("POST", "/api/v1/auth/logout"): Rule(A.PUBLIC, phase=2),  # ends the session
    ("GET", "/api/v1/users/me"): Rule(A.MANAGEMENT),
    ("PUT", "/api/v1/users/me/password"): Rule(
        A.MANAGEMENT, json={"current_password": "not-it-1", "new_password": "whatever-pw-2"}
    ),
    ("GET", "/api/v1/users"): Rule(A.ADMIN),
    ("POST", "/api/v1/users"): Rule(A.ADMIN, json=_new_user),
    ("GET", "/api/v1/users/{user_id}"): Rule(A.ADMIN),
    ("PATCH", "/api/v1/users/{user_id}"): Rule(A.ADMIN, json={"full_name": "Matrix"}),
    ("DELETE", "/api/v1/users/{user_id}"): Rule(A.ADMIN, ids={"user_id": "doomed_user_id"}),
    # API keys
    ("POST", "/api/v1/api-keys"): Rule(A.MANAGEMENT, json=_new_key),
    ("GET", "/api/v1/api-keys"): Rule(A.MANAGEMENT),
    ("GET", "/api/v1/api-keys/{key_id}"): Rule(A.MANAGEMENT),
    ("PATCH", "/api/v1/api-keys/{key_id}"): Rule(A.ADMIN, json={"rpm_limit": 1000}),
    ("DELETE", "/api/v1/api-keys/{key_id}"): Rule(A.MANAGEMENT, ids={"key_id": "doomed_key_id"}),
    # workers
    ("POST", "/api/v1/workers/register"): Rule(
        A.REGISTRATION, json=_registration, exceptions={WORKER: _REATTACH}
    ),
    ("POST", "/api/v1/workers/heartbeat"): Rule(A.WORKER, json=_heartbeat),
    ("GET", "/api/v1/workers/assignments"): Rule(A.WORKER, params={"wait": 0}),
    ("POST", "/api/v1/workers/instance-reports"): Rule(A.WORKER, json={"reports": []}),
    ("GET", "/api/v1/workers"): Rule(A.ADMIN),
    ("GET", "/api/v1/workers/{worker_id}"): Rule(A.ADMIN),
    ("PATCH", "/api/v1/workers/{worker_id}"): Rule(A.ADMIN, json={"labels": {"zone": "a"}}),
    ("DELETE", "/api/v1/workers/{worker_id}"): Rule(A.ADMIN, ids={"worker_id": "doomed_worker_id"}),
    ("GET", "/api/v1/gpus"): Rule(A.ADMIN),
    # models, instances, catalog, backends, providers, usage
    ("POST", "/api/v1/models"): Rule(A.ADMIN, json=_new_model),
    ("GET", "/api/v1/models"): Rule(A.MANAGEMENT),
    ("GET", "/api/v1/models/{model_id}"): Rule(A.MANAGEMENT),
    ("PATCH", "/api/v1/models/{model_id}"): Rule(A.ADMIN, json={"description": "matrix"}),
    ("DELETE", "/api/v1/models/{model_id}"): Rule(A.ADMIN, ids={"model_id": "doomed_model_id"}),
    ("GET", "/api/v1/model-instances"): Rule(A.MANAGEMENT),
    ("GET", "/api/v1/model-instances/{instance_id}"): Rule(A.MANAGEMENT),
    ("GET", "/api/v1/model-instances/{instance_id}/logs"): Rule(A.ADMIN),
    ("POST", "/api/v1/model-evaluations"): Rule(A.ADMIN, json=_spec),
    ("GET", "/api/v1/catalog"): Rule(A.MANAGEMENT),
    ("POST", "/api/v1/catalog/{entry}/deploy"): Rule(A.ADMIN, json={"replicas": 0}),
    ("GET", "/api/v1/backends"): Rule(A.MANAGEMENT),
    ("GET", "/api/v1/backends/{name}"): Rule(A.MANAGEMENT),
    ("POST", "/api/v1/backends"): Rule(A.ADMIN, json={"name": "made"}),
    ("DELETE", "/api/v1/backends/{name}"): Rule(A.ADMIN, ids={"name": "absent_backend"}),
    ("POST", "/api/v1/providers"): Rule(A.ADMIN, json=_new_provider),
    ("GET", "/api/v1/providers"): Rule(A.ADMIN),
    ("PATCH", "/api/v1/providers/{provider_id}"): Rule(A.ADMIN, json={"models": ["remote"]}),
    ("DELETE", "/api/v1/providers/{provider_id}"): Rule(
        A.ADMIN, ids={"provider_id": "doomed_provider_id"}
    ),
    ("GET", "/api/v1/usage"): Rule(A.MANAGEMENT),
    # what gateways fetch from the control plane
    ("GET", "/api/v1/gateway/routes"): Rule(A.GATEWAY, params={"wait": 0}),
    ("POST", "/api/v1/gateway/keys/check"): Rule(A.GATEWAY, json=_key_check),
    ("POST", "/api/v1/gateway/usage"): Rule(A.GATEWAY, json={"records": []}),
    ("GET", "/api/v1/gateway/key-changes"): Rule(A.GATEWAY, params={"wait": 0}),
    # gateway identities and the registration token
    ("POST", "/api/v1/gateways"): Rule(A.ADMIN, json=_gateway_registration),
    ("GET", "/api/v1/gateways"): Rule(A.ADMIN),
    ("GET", "/api/v1/gateways/{gateway_id}"): Rule(A.ADMIN),
    ("DELETE", "/api/v1/gateways/{gateway_id}"): Rule(
        A.ADMIN, ids={"gateway_id": "doomed_gateway_id"}
    ),
    ("POST", "/api/v1/gateways/register"): Rule(
        A.REGISTRATION, json=_gateway_registration, exceptions={GATEWAY: _REATTACH}
    ),
    ("POST", "/api/v1/cluster/registration-token"): Rule(A.ADMIN, phase=1),
    # the gateway's OpenAI- and Anthropic-compatible API
    ("GET", "/v1/models"): Rule(A.INFERENCE, exceptions=_LISTING),
    ("GET", "/v1/models/{model}"): Rule(A.INFERENCE, exceptions=_LISTING),
    ("POST", "/v1/chat/completions"): Rule(A.INFERENCE, json=CHAT),
    ("POST", "/v1/completions"): Rule(A.INFERENCE, json={"model": MODEL, "prompt": "hi"}),
    ("POST", "/v1/embeddings"): Rule(A.INFERENCE, json={"model": MODEL, "input": "hi"}),
    ("POST", "/v1/rerank"): Rule(A.INFERENCE, json=RERANK),
    ("POST", "/v1/audio/speech"): Rule(A.INFERENCE, json=SPEECH),
    ("POST", "/v1/audio/transcriptions"): Rule(A.INFERENCE, form=True),
    ("POST", "/v1/audio/translations"): Rule(A.INFERENCE, form=True),
    ("POST", "/v1/images/generations"): Rule(A.INFERENCE, json={"model": MODEL, "prompt": "x"}),
    ("POST", "/v1/images/edits"): Rule(A.INFERENCE, form=True),
    ("POST", "/v1/messages"): Rule(A.INFERENCE, json=CHAT),
}
