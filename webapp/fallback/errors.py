"""OpenAI-style errors: every failure of the API answers `{"error": {message, type, param, code}}`.

Messages name parameters and limits, never request content, so an error body or log line cannot
carry a prompt.
"""

from __future__ import annotations

from flask import jsonify


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self):
        resp = jsonify(self.body())
        resp.status_code = self.status
        for name, value in self.headers.items():
            resp.headers[name] = value
        return resp


def invalid(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)
