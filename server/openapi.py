"""The OpenAPI 3.0 document of the HTTP API and a self-contained docs page rendered from it
(no CDN: the page works offline and inside an extension's network policy)."""
from __future__ import annotations

import html
import json

from .auth import MATRIX

ERROR = {"$ref": "#/components/schemas/Error"}
UUID = {"type": "string", "format": "uuid"}


def _err(desc: str, headers: dict | None = None) -> dict:
    r = {"description": desc, "content": {"application/json": {"schema": ERROR}}}
    if headers:
        r["headers"] = headers
    return r


RETRY = {"Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "integer"}}}
WWW_AUTH = {"WWW-Authenticate": {"schema": {"type": "string"}}}


def _auth_errors() -> dict:
    return {"401": _err("no API key, or an unknown, revoked or expired one", WWW_AUTH),
            "403": _err("the key's role may not use this endpoint"),
            "408": _err("the request body did not arrive within the server's body deadline"),
            "429": _err("rate limit of this API key exceeded (a photo costs one request per started 4 "
                        "megapixels), this key has too many requests in progress, or too many requests "
                        "without a valid key came from this address", RETRY)}


def _roles(route: str) -> str:
    return "Roles: " + ", ".join(f"`{r}`" for r in sorted(MATRIX[route])) + "."


IMAGE_BODY_TYPES = ("image/jpeg", "image/png", "image/webp", "image/heic", "application/octet-stream")


def _image_body(extra_form: dict | None = None) -> dict:
    binary = {"type": "string", "format": "binary"}
    content = {t: {"schema": binary} for t in IMAGE_BODY_TYPES}
    form = {"type": "object", "required": ["image"], "properties": {"image": binary, **(extra_form or {})}}
    content["multipart/form-data"] = {"schema": form}
    return {"required": True, "description": (
        "The photo: the raw bytes as the body, or a multipart form with an `image` file field. "
        "The format is found from the content (JPEG, PNG, WebP, HEIC); the Content-Type and "
        "file name are ignored."), "content": content}


def build_spec(max_refine: int = 50, max_body: int = 40 * 1024 * 1024, max_pixels: int = 50_000_000,
               strengths: tuple[str, ...] = ("low", "mid", "high"), version: str = "0.1.0") -> dict:
    strength = {"type": "string", "enum": list(strengths), "default": "mid",
                "description": "L-inf budget of the cloak: low 3/255, mid 5/255, high 8/255"}
    refine = {"type": "integer", "minimum": 0, "maximum": max_refine, "default": 0,
              "description": "extra per-photo optimisation steps (slower, stronger)"}
    flag = {"type": "boolean", "default": False}
    cloak_params = [
        {"name": "strength", "in": "query", "schema": strength},
        {"name": "refine", "in": "query", "schema": refine},
        {"name": "report", "in": "query", "schema": flag,
         "description": "answer JSON with the protection report (and the image in base64)"},
        {"name": "keep_gps", "in": "query", "schema": flag, "description": "keep GPS EXIF (stripped by default)"},
        {"name": "retain_original", "in": "query", "schema": flag,
         "description": "store the uncloaked original with the record (off by default; erased on forget)"},
    ]
    image_out = {"schema": {"type": "string", "format": "binary"}}
    cloak_headers = {
        "X-Faceprov-Record-Id": {"description": "id of the cloak record", "schema": UUID},
        "X-Faceprov-Faces": {"description": "faces cloaked", "schema": {"type": "integer"}},
        "X-Faceprov-Skipped": {"description": "faces found but too small or unclear", "schema": {"type": "integer"}},
        "X-Faceprov-Summary": {"description": "compact JSON: faces, strength, model, and `protection` (the "
                               "black-box headline), `measured`, `black_box_protected` of `black_box_total`, "
                               "`still_recognisable_by`, `white_box`, `what_now` / `try` when a face is still "
                               "recognisable; protection is measured only with report=true",
                               "schema": {"type": "string"}},
        "X-Faceprov-Protection": {"description": "the protection headline in words: how many black-box recognizers "
                                  "(ones the cloak never saw in training) no longer recognise the faces, or that "
                                  "it was not measured (without report=true)", "schema": {"type": "string"}},
    }
    page = [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
            {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 1000000, "default": 0}}]
    id_param = [{"name": "id", "in": "path", "required": True, "schema": UUID}]
    sec = [{"ApiKey": []}, {"Bearer": []}]

    paths = {
        "/healthz": {"get": {"summary": "Liveness", "operationId": "healthz", "security": [],
                             "responses": {"200": {"description": "the process is up", "content": {
                                 "application/json": {"schema": {"type": "object", "required": ["status"],
                                                                 "properties": {"status": {"type": "string"}}}}}}}}},
        "/readyz": {"get": {"summary": "Readiness: cloak model loaded and database reachable", "operationId": "readyz",
                            "security": [],
                            "responses": {"200": {"description": "ready", "content": {"application/json": {
                                "schema": {"$ref": "#/components/schemas/Ready"}}}},
                                "503": {"description": "not ready; `error.message` says why", "content": {
                                    "application/json": {"schema": {"$ref": "#/components/schemas/NotReady"}}}}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "operationId": "metrics", "security": [],
                             "responses": {"200": {"description": "text exposition format 0.0.4",
                                                   "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": {"summary": "This document", "operationId": "openapi", "security": [],
                                  "responses": {"200": {"description": "OpenAPI 3.0",
                                                        "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        "/docs": {"get": {"summary": "API documentation page", "operationId": "docs", "security": [],
                          "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}}},
        "/v1/cloak": {"post": {
            "summary": "Cloak every face in a photo", "operationId": "cloak", "security": sec,
            "description": ("Detects every face, cloaks the usable ones and answers the photo in its own "
                            "format (EXIF kept, orientation applied, GPS stripped unless keep_gps). The cloak "
                            "is recorded; the record id and a summary come in headers. With `report=true` the "
                            "answer is JSON with the protection report and the image in base64. Options may "
                            "also be sent as multipart form fields. "
                            f"Limits: body {max_body} bytes, {max_pixels} pixels. " + _roles("cloak")),
            "parameters": cloak_params + [{
                "name": "Idempotency-Key", "in": "header", "required": False,
                "description": ("1-128 printable ASCII characters. A repeat with the same key (same account, "
                                "photo and options) answers the first request's stored answer with "
                                "`Idempotent-Replayed: true`, from any replica, and makes no second record."),
                "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[\\x21-\\x7e]+$"}}],
            "requestBody": _image_body({"strength": strength, "refine": refine, "report": flag,
                                        "keep_gps": flag, "retain_original": flag}),
            "responses": {
                "200": {"description": "the cloaked photo (or JSON with report=true)", "headers": cloak_headers,
                        "content": {"image/jpeg": image_out, "image/png": image_out, "image/webp": image_out,
                                    "image/heif": image_out,
                                    "application/json": {"schema": {"$ref": "#/components/schemas/CloakReport"}}}},
                "400": _err("bad options, empty or damaged image"),
                **_auth_errors(),
                "413": _err("body or pixel count over the limit"),
                "415": _err("not a JPEG, PNG, WebP or HEIC image"),
                "409": _err("a request with this Idempotency-Key is still being worked on", RETRY),
                "422": _err("no face large or clear enough to protect, or an Idempotency-Key reused "
                            "for a different photo or options"),
                "503": _err("queue full (Retry-After), cloak model not loaded, or a recognizer that "
                            "`refine` needs is not installed", RETRY),
                "504": _err("the request took longer than the server's per-request timeout"),
            }}},
        "/v1/verify": {"post": {
            "summary": "Check a suspected face swap", "operationId": "verify", "security": sec,
            "description": ("Detects every face, scores it with the ISM (manipulated probability and region) "
                            "and, for manipulated faces (or all with `always_recover=true`), restores the "
                            "source and target faces with the recovery models present (DFREC, DRFSI, DRN), "
                            "then matches them against the identity registry. The verification is recorded "
                            "(verdict and matched identity ids; no pixels, no embeddings); the evidence picture "
                            "is kept for a limited time (any replica serves it), at `evidence_url`. Answers 503 `not_available` when no "
                            "verification model is installed — never a made-up verdict. " + _roles("verify")),
            "parameters": [{"name": "always_recover", "in": "query", "schema": {"type": "boolean"}}],
            "requestBody": _image_body({"always_recover": flag}),
            "responses": {
                "200": {"description": "verdict", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/VerifyResult"}}}},
                "400": _err("empty or damaged image, bad option"), **_auth_errors(),
                "413": _err("body or pixel count over the limit"), "415": _err("not a supported image"),
                "422": _err("no face to check"),
                "503": _err("`not_available`: no verification model installed (or still loading), or queue full",
                            RETRY),
                "504": _err("the request took longer than the server's per-request timeout"),
            }}},
        "/v1/cloaks": {"get": {
            "summary": "Cloak history", "operationId": "listCloaks", "security": sec,
            "description": "Own records for `user`; every account's for `auditor` and `admin` (filter with `owner`). "
                           + _roles("list_cloaks"),
            "parameters": page + [
                {"name": "since", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                {"name": "until", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                {"name": "owner", "in": "query", "schema": {"type": "string", "maxLength": 128},
                 "description": "account name or id (auditor/admin only)"}],
            "responses": {"200": {"description": "records, oldest first", "content": {"application/json": {
                "schema": {"type": "object", "required": ["items"], "properties": {
                    "items": {"type": "array", "items": {"$ref": "#/components/schemas/CloakRecord"}}}}}}},
                "400": _err("bad parameter"), **_auth_errors(), "404": _err("unknown owner")}}},
        "/v1/cloaks/{id}": {"get": {
            "summary": "One cloak record", "operationId": "getCloak", "security": sec, "parameters": id_param,
            "description": "A user gets only their own records (others answer 404). " + _roles("get_cloak"),
            "responses": {"200": {"description": "the record", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/CloakRecord"}}}},
                "400": _err("malformed id"), **_auth_errors(), "404": _err("no such record")}},
            "delete": {
            "summary": "Erase a cloak record", "operationId": "forgetCloak", "security": sec, "parameters": id_param,
            "description": ("Deletes the record, its face and context hashes, the retained original, the per-record "
                            "identities it created (embeddings included) and its id in verification rows; leaves one "
                            "tombstone row in the audit chain. Owner or admin only. " + _roles("forget_cloak")),
            "responses": {"200": {"description": "erased", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/CloakForgotten"}}}},
                "400": _err("malformed id"), **_auth_errors(), "404": _err("no such record")}}},
        "/v1/verifications/{id}": {"get": {
            "summary": "One verification", "operationId": "getVerification", "security": sec,
            "parameters": id_param,
            "description": "A platform gets only its own verifications. " + _roles("get_verification"),
            "responses": {"200": {"description": "the verification", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Verification"}}}},
                "400": _err("malformed id"), **_auth_errors(), "404": _err("no such verification")}}},
        "/v1/verifications/{id}/evidence.png": {"get": {
            "summary": "Evidence picture of a verification", "operationId": "getEvidence", "security": sec,
            "parameters": id_param,
            "description": ("input | ISM mask | recovered source | recovered target | best matches, per face. "
                            "Kept in the server's memory for recent verifications only. " + _roles("get_verification")),
            "responses": {"200": {"description": "PNG", "content": {"image/png": image_out}},
                          "400": _err("malformed id"), **_auth_errors(),
                          "404": _err("no such verification, or its evidence is no longer kept")}}},
        "/v1/identities": {"post": {
            "summary": "Enrol a reference face", "operationId": "enrolIdentity", "security": sec,
            "description": ("The photo must show exactly one usable face; its embeddings (one per configured "
                            "recognizer) are stored in the registry under a new identity of the caller. "
                            "Embeddings are biometric data: erase them with DELETE. " + _roles("enrol_identity")),
            "parameters": [{"name": "label", "in": "query", "schema": {"type": "string", "maxLength": 256}}],
            "requestBody": _image_body({"label": {"type": "string", "maxLength": 256}}),
            "responses": {"201": {"description": "enrolled", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Enrolled"}}}},
                "400": _err("bad input"), **_auth_errors(), "413": _err("too large"), "415": _err("not an image"),
                "422": _err("no face, or more than one"),
                "503": _err("queue full, or no recognizer available", RETRY)}}},
        "/v1/identities/{id}": {"delete": {
            "summary": "Erase an identity", "operationId": "forgetIdentity", "security": sec, "parameters": id_param,
            "description": ("Deletes the identity's embeddings and retained originals and leaves a tombstone. "
                            "A user may erase only their own identities. " + _roles("forget_identity")),
            "responses": {"200": {"description": "erased", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Forgotten"}}}},
                "400": _err("malformed id or already erased"), **_auth_errors(), "404": _err("no such identity")}}},
        "/v1/audit": {"get": {
            "summary": "Audit log (hash chain)", "operationId": "audit", "security": sec,
            "description": _roles("audit"),
            "parameters": [{"name": "after_seq", "in": "query",
                            "schema": {"type": "integer", "minimum": 0, "maximum": 2**53, "default": 0}},
                           {"name": "limit", "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}],
            "responses": {"200": {"description": "rows in chain order", "content": {"application/json": {
                "schema": {"type": "object", "required": ["items"], "properties": {
                    "items": {"type": "array", "items": {"$ref": "#/components/schemas/AuditRow"}}}}}}},
                "400": _err("bad parameter"), **_auth_errors()}}},
    }
    nullable_str = {"type": "string", "nullable": True}
    schemas = {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
        "Check": {"type": "object", "required": ["ok"], "properties": {
            "ok": {"type": "boolean"}, "reason": nullable_str}},
        "Ready": {"type": "object", "required": ["ready", "checks"], "properties": {
            "ready": {"type": "boolean"},
            "checks": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/Check"}}}},
        "NotReady": {"allOf": [{"$ref": "#/components/schemas/Error"}, {"$ref": "#/components/schemas/Ready"}]},
        "CloakRecord": {"type": "object", "required": ["id", "owner_id", "created_at", "input_sha256", "output_sha256"],
                        "properties": {"id": UUID, "seq": {"type": "integer"}, "owner_id": {"type": "string"},
                                       "owner": {"type": "string"}, "created_at": {"type": "string"},
                                       "model": {"type": "object"}, "input_sha256": {"type": "string"},
                                       "output_sha256": {"type": "string"}, "pdq": nullable_str,
                                       "report": {"type": "object", "nullable": True},
                                       "faces": {"type": "array", "items": {"type": "object"}},
                                       "retain_original": {"type": "boolean"}}},
        "CloakReport": {"type": "object", "required": ["record_id", "summary", "image"], "properties": {
            "record_id": UUID, "summary": {"type": "object"}, "report": {"type": "object", "nullable": True},
            "image": {"type": "object", "required": ["media_type", "base64"], "properties": {
                "media_type": {"type": "string"}, "base64": {"type": "string"}}}}},
        "Verification": {"type": "object", "required": ["id", "verdict"], "properties": {
            "id": UUID, "requester_id": {"type": "string"}, "created_at": {"type": "string"},
            "input_sha256": {"type": "string"}, "verdict": {"type": "string"},
            "matches": {"type": "array", "items": {"type": "object"}, "nullable": True}}},
        "VerifyResult": {"type": "object", "required": ["id", "verdict", "faces", "evidence_url"], "properties": {
            "id": UUID, "verdict": {"type": "string", "enum": ["manipulated", "clean", "no_face"]},
            "manipulated_probability": {"type": "number", "nullable": True},
            "faces": {"type": "array", "items": {"type": "object"}}, "skipped": {"type": "array",
                                                                                "items": {"type": "object"}},
            "models": {"type": "object"}, "unavailable": {"type": "object"},
            "match_recognizer": {"type": "string", "nullable": True},
            "match_threshold": {"type": "number", "nullable": True},
            "provenance": {"type": "object", "description": "cloak records the photo was made from: "
                           "{records: [{record_id, owner_id, owner, created_at, distance, by}], by: "
                           "context_pdq | photo_pdq | null, context_pdq, photo_pdq, thresholds}"},
            "evidence_url": {"type": "string"}}},
        "Enrolled": {"type": "object", "required": ["id", "recognizers"], "properties": {
            "id": UUID, "label": nullable_str, "recognizers": {"type": "array", "items": {"type": "string"}},
            "box": {"type": "array", "items": {"type": "number"}}}},
        "Forgotten": {"type": "object", "required": ["identity_id"], "properties": {
            "identity_id": UUID, "embeddings_deleted": {"type": "integer"},
            "originals_deleted": {"type": "integer"}, "tombstone": {"type": "boolean"}}},
        "CloakForgotten": {"type": "object", "required": ["record_id", "tombstone"], "properties": {
            "record_id": UUID, "tombstone": {"type": "boolean"}, "faces": {"type": "integer"},
            "embeddings_deleted": {"type": "integer"}, "originals_deleted": {"type": "integer"},
            "identities_forgotten": {"type": "array", "items": UUID},
            "verifications_scrubbed": {"type": "array", "items": UUID}}},
        "AuditRow": {"type": "object", "required": ["seq", "action", "row_hash"], "properties": {
            "seq": {"type": "integer"}, "created_at": {"type": "string"}, "actor": {"type": "string"},
            "action": {"type": "string"}, "object_type": {"type": "string"}, "object_id": {"type": "string"},
            "payload": {"type": "string"}, "prev_hash": {"type": "string"}, "row_hash": {"type": "string"},
            "row_mac": {"type": "string", "nullable": True}}},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "faceprov API", "version": version, "description": (
            "Cloak faces in photos before they are posted, keep a provenance record of every cloak, and "
            "(later) check suspected face swaps. Every error is JSON: `{\"error\": {\"code\", \"message\"}}`. "
            "Authenticate with `X-API-Key: <key>` or `Authorization: Bearer <key>`; make a key with "
            "`faceprov keys create --role user --owner NAME`. Browsers may call the API only from the "
            "faceprov extension (chrome-extension://) or from origins the operator configured.")},
        "servers": [{"url": "/"}],
        "security": sec,
        "paths": paths,
        "components": {
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                                "Bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
    }


def docs_html(spec: dict) -> str:
    e = html.escape
    out = ["<!doctype html><html><head><meta charset='utf-8'><title>faceprov API</title><style>"
           "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;color:#222;padding:0 1rem}"
           "code,pre{background:#f4f4f4;padding:2px 4px;border-radius:3px}pre{padding:.6rem;overflow:auto}"
           ".op{border:1px solid #ddd;border-radius:6px;margin:1rem 0;padding:.6rem 1rem}"
           ".m{font-weight:700;text-transform:uppercase;margin-right:.5rem}table{border-collapse:collapse}"
           "td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}</style></head><body>",
           f"<h1>{e(spec['info']['title'])} {e(spec['info']['version'])}</h1>",
           f"<p>{e(spec['info']['description'])}</p>",
           "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a>.</p>",
           "<h2>Quick start</h2><pre>faceprov serve --model PATH/TO/MODEL &amp;\n"
           "KEY=$(faceprov keys create --role user --owner alice)\n"
           "curl -sf -H \"X-API-Key: $KEY\" --data-binary @photo.jpg \\\n"
           "     'http://127.0.0.1:8765/v1/cloak?strength=mid' -o photo.cloaked.jpg</pre>"]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            out.append(f"<div class='op'><h3><span class='m'>{e(method)}</span><code>{e(path)}</code> — "
                       f"{e(op.get('summary', ''))}</h3>")
            if op.get("description"):
                out.append(f"<p>{e(op['description'])}</p>")
            if op.get("parameters"):
                out.append("<table><tr><th>parameter</th><th>in</th><th>schema</th><th>about</th></tr>")
                for p in op["parameters"]:
                    out.append(f"<tr><td><code>{e(p['name'])}</code></td><td>{e(p['in'])}</td>"
                               f"<td><code>{e(json.dumps(p['schema']))}</code></td>"
                               f"<td>{e(p.get('description', ''))}</td></tr>")
                out.append("</table>")
            if op.get("requestBody"):
                out.append("<p>Body: " + ", ".join(f"<code>{e(t)}</code>" for t in op["requestBody"]["content"])
                           + "</p>")
            out.append("<p>Responses: " + ", ".join(
                f"<b>{e(code)}</b> {e(r.get('description', ''))}" for code, r in op["responses"].items()) + "</p></div>")
    out.append("</body></html>")
    return "".join(out)
