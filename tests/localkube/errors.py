"""API errors shaped like the real API server's `Status` responses."""

from __future__ import annotations


class ApiError(Exception):
    """An error that the HTTP layer turns into a `v1.Status` body."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict:
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(rt, name, **extra):
    d = {}
    if name:
        d["name"] = name
    if rt is not None and rt.group:
        d["group"] = rt.group
    if rt is not None:
        d["kind"] = rt.plural  # the real server puts the resource here, not the kind
    d.update(extra)
    return d


def not_found(rt, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.qualified_resource} "{name}" not found', _details(rt, name))


def already_exists(rt, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{rt.qualified_resource} "{name}" already exists', _details(rt, name))


def conflict(rt, name: str, detail: str | None = None) -> ApiError:
    detail = detail or "the object has been modified; please apply your changes to the latest version and try again"
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rt.qualified_resource} "{name}": {detail}',
                    _details(rt, name))


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def method_not_allowed(message: str = "the server does not allow this method on the requested resource") -> ApiError:
    return ApiError(405, "MethodNotAllowed", message, {})


def unsupported_media_type(content_type: str, accepted: list[str]) -> ApiError:
    return ApiError(415, "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media types include: {', '.join(accepted)}")


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def forbidden(rt, name: str, message: str) -> ApiError:
    return ApiError(403, "Forbidden", f'{rt.qualified_resource} "{name}" is forbidden: {message}', _details(rt, name))


def internal(message: str) -> ApiError:
    return ApiError(500, "InternalError", f"Internal error occurred: {message}", {"causes": [{"message": message}]})


class FieldError:
    """One entry of a field.ErrorList (k8s.io/apimachinery/pkg/util/validation/field)."""

    def __init__(self, kind: str, path: str, value=None, detail: str = "", supported=None):
        self.kind = kind  # Invalid, Required, Forbidden, NotSupported, Duplicate, TooLong, TooMany
        self.path = path
        self.value = value
        self.detail = detail
        self.supported = supported

    @staticmethod
    def fmt_value(v) -> str:
        import json
        if isinstance(v, str):
            return json.dumps(v)
        if v is None:
            return "null"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return json.dumps(v)
        return json.dumps(v, separators=(",", ":"), sort_keys=True)

    @property
    def reason(self) -> str:
        return {
            "Invalid": "FieldValueInvalid",
            "Required": "FieldValueRequired",
            "Forbidden": "FieldValueForbidden",
            "NotSupported": "FieldValueNotSupported",
            "Duplicate": "FieldValueDuplicate",
            "TooLong": "FieldValueTooLong",
            "TooMany": "FieldValueTooMany",
            "NotFound": "FieldValueNotFound",
            "TooLongAnnotations": "FieldValueTooLong",
        }[self.kind]

    def body(self) -> str:
        """The message without the leading field path."""
        k = self.kind
        if k == "Required":
            return "Required value" + (f": {self.detail}" if self.detail else "")
        if k == "Forbidden":
            return "Forbidden" + (f": {self.detail}" if self.detail else "")
        if k == "Invalid":
            return f"Invalid value: {self.fmt_value(self.value)}" + (f": {self.detail}" if self.detail else "")
        if k == "NotSupported":
            s = f"Unsupported value: {self.fmt_value(self.value)}"
            if self.supported:
                s += ": supported values: " + ", ".join(self.fmt_value(x) for x in self.supported)
            return s
        if k == "NotFound":
            return f"Not found: {self.fmt_value(self.value)}"
        if k == "Duplicate":
            return f"Duplicate value: {self.fmt_value(self.value)}"
        if k == "TooLongAnnotations":
            return f"Too long: must have at most {self.detail} bytes"
        if k == "TooLong":
            return f"Too long: may not be more than {self.detail} bytes"
        if k == "TooMany":
            return f"Too many: {self.value}: must have at most {self.detail} items"
        return self.detail

    def __str__(self) -> str:
        return f"{self.path}: {self.body()}" if self.path else self.body()


def invalid(rt, name: str, errors: list[FieldError]) -> ApiError:
    if len(errors) == 1:
        agg = str(errors[0])
    else:
        agg = "[" + ", ".join(str(e) for e in errors) + "]"
    qkind = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
    details = {"name": name, "kind": rt.kind}
    if rt.group:
        details["group"] = rt.group
    details["causes"] = [{"reason": e.reason, "message": e.body(), "field": e.path} for e in errors]
    return ApiError(422, "Invalid", f'{qkind} "{name}" is invalid: {agg}', details)
