"""A small MinIO admin API + S3 stand-in over real HTTP, to test MinioStore without a MinIO or RustFS binary.

Built from MinIO's public admin API (madmin-go), RustFS's handlers and the minio package's source:
- every request must carry a valid AWS SigV4 ``Authorization`` header from the admin key (verified here
  with an independent implementation of the signing algorithm);
- paths are ``/minio/admin/v3/<command>`` with the query parameters MinIO reads;
- bodies that carry secrets (add-user, add/update-service-account, policy attach/detach) and the answers
  that carry them (list-service-accounts, add-service-account, attach/detach) use MinIO's encrypted
  format (argon2id key from the admin secret, AES-GCM "sio" chunks); the server decrypts with the minio
  package's own ``decrypt`` to prove the round trip;
- errors are MinIO's JSON error bodies with its codes and statuses.
It keeps users, canned policies, attachments, service accounts, and a minimal S3 (buckets, objects,
ListObjectsV2, DeleteObjects) in memory. Every request is recorded for assertions.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from minio.crypto import decrypt, encrypt

ADMIN_PREFIX = "/minio/admin/v3/"
_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]*)/(\w+)/aws4_request, ?"
    r"SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})"
)
_S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]
    raw_body: bytes
    plain_body: bytes | None = None  # the decrypted body of encrypted admin requests


@dataclass
class State:
    """Everything the stand-in stores."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    policies: dict[str, Any] = field(default_factory=dict)
    service_accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    buckets: dict[str, dict[str, bytes]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)


class _Body:
    """Just enough of a urllib3 response for ``minio.crypto.decrypt``."""

    def __init__(self, data: bytes) -> None:
        self._io = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._io.read(n)

    def close(self) -> None:
        self._io.close()

    def release_conn(self) -> None:
        pass


class AdminError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class MinioAdminServer:
    """The stand-in: ``start()``, then ``endpoint``, ``access_key``, ``secret_key``, ``state``; ``stop()``."""

    def __init__(self, access_key: str = "fixtureadmin", secret_key: str = "fixture-admin-secret-0123") -> None:  # noqa: S107
        self.access_key = access_key
        self.secret_key = secret_key
        self.state = State()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server._handle(self, "GET")

            def do_PUT(self) -> None:
                server._handle(self, "PUT")

            def do_POST(self) -> None:
                server._handle(self, "POST")

            def do_DELETE(self) -> None:
                server._handle(self, "DELETE")

            def do_HEAD(self) -> None:
                server._handle(self, "HEAD")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> MinioAdminServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def writes(self) -> int:
        """How many state-changing requests (PUT/POST/DELETE) the server has received so far."""
        return sum(1 for r in self.state.requests if r.method in ("PUT", "POST", "DELETE"))

    # --- HTTP plumbing -------------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        url = urlsplit(h.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        record = Recorded(method, url.path, query, body)
        with self.lock:
            self.state.requests.append(record)
            try:
                self._verify_signature(h, method, url.path, url.query, body)
                if url.path.startswith(ADMIN_PREFIX):
                    status, payload, ctype = self._admin(method, url.path[len(ADMIN_PREFIX) :], query, body, record)
                else:
                    copy_source = h.headers.get("x-amz-copy-source")
                    status, payload, ctype = self._s3(method, url.path, query, body, copy_source)
            except AdminError as exc:
                if url.path.startswith(ADMIN_PREFIX):
                    status, ctype = exc.status, "application/json"
                    payload = json.dumps({"Code": exc.code, "Message": exc.message, "Resource": url.path}).encode()
                else:
                    status, ctype = exc.status, "application/xml"
                    payload = (
                        f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{exc.code}</Code>"
                        f"<Message>{exc.message}</Message></Error>"
                    ).encode()
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        if method != "HEAD":
            h.wfile.write(payload)

    def _verify_signature(self, h: BaseHTTPRequestHandler, method: str, path: str, raw_query: str, body: bytes) -> None:
        """AWS Signature V4, computed independently of botocore and the minio package."""
        match = _AUTH.fullmatch(h.headers.get("Authorization", ""))
        if not match:
            raise AdminError(403, "AccessDenied", "missing or malformed SigV4 Authorization header")
        access_key, day, region, service, signed, signature = match.groups()
        if access_key != self.access_key:
            raise AdminError(403, "InvalidAccessKeyId", "The access key ID you provided does not exist")
        payload_hash = h.headers.get("x-amz-content-sha256", "")
        if payload_hash not in ("UNSIGNED-PAYLOAD",) and payload_hash != hashlib.sha256(body).hexdigest():
            raise AdminError(400, "XAmzContentSHA256Mismatch", "payload hash does not match the body")
        pairs = sorted(
            (quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in parse_qsl(raw_query, keep_blank_values=True)
        )
        headers = "".join(f"{name}:{' '.join((h.headers.get(name) or '').split())}\n" for name in signed.split(";"))
        canonical = "\n".join(
            [
                method,
                quote(unquote(path), safe="/-_.~"),
                "&".join(f"{k}={v}" for k, v in pairs),
                headers,
                signed,
                payload_hash,
            ]
        )
        scope = f"{day}/{region}/{service}/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", h.headers.get("x-amz-date", ""), scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        key = ("AWS4" + self.secret_key).encode()
        for part in (day, region, service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise AdminError(403, "SignatureDoesNotMatch", "The request signature we calculated does not match")

    def _decrypt(self, body: bytes, record: Recorded) -> dict[str, Any]:
        try:
            plain = decrypt(_Body(body), self.secret_key)  # type: ignore[arg-type]
        except Exception as exc:
            raise AdminError(400, "XMinioAdminConfigBadJSON", f"body is not MinIO-encrypted: {exc}") from None
        record.plain_body = plain
        return dict(json.loads(plain))

    def _encrypt(self, data: dict[str, Any]) -> tuple[int, bytes, str]:
        return 200, encrypt(json.dumps(data).encode(), self.secret_key), "application/octet-stream"

    # --- admin API -----------------------------------------------------------------------------------

    def _admin(
        self, method: str, command: str, q: dict[str, str], body: bytes, record: Recorded
    ) -> tuple[int, bytes, str]:
        st = self.state
        ok: tuple[int, bytes, str] = (200, b"", "application/json")
        route = (method, command)
        if route == ("PUT", "add-user"):
            req = self._decrypt(body, record)
            name, secret = q.get("accessKey", ""), req.get("secretKey", "")
            if len(name) < 3 or not 8 <= len(secret) <= 40:
                raise AdminError(400, "XMinioAdminInvalidArgument", "access key or secret key has a bad length")
            if "=" in name or "," in name:  # MinIO's auth.ContainsReservedChars
                raise AdminError(400, "XMinioAdminInvalidArgument", "access key contains one of reserved characters")
            user = st.users.setdefault(name, {"policies": set()})
            user.update(secret=secret, status=req.get("status", "enabled"))
            return ok
        if route == ("GET", "list-users"):
            return self._encrypt(
                {
                    name: {"policyName": ",".join(sorted(u["policies"])), "status": u["status"]}
                    for name, u in sorted(st.users.items())
                }
            )
        if route == ("GET", "user-info"):
            user = self._user(q.get("accessKey", ""))
            info = {"policyName": ",".join(sorted(user["policies"])), "status": user["status"], "memberOf": None}
            return 200, json.dumps(info).encode(), "application/json"
        if route == ("DELETE", "remove-user"):
            name = q.get("accessKey", "")
            self._user(name)
            del st.users[name]
            for ak in [ak for ak, sa in st.service_accounts.items() if sa["parent"] == name]:
                del st.service_accounts[ak]
            return ok
        if route == ("PUT", "add-canned-policy"):
            doc = json.loads(body)
            if not q.get("name") or "Statement" not in doc:
                raise AdminError(400, "XMinioMalformedPolicy", "policy has no Statement")
            st.policies[q["name"]] = doc
            return ok
        if route == ("GET", "info-canned-policy"):
            return 200, json.dumps(self._policy(q.get("name", ""))).encode(), "application/json"
        if route == ("DELETE", "remove-canned-policy"):
            name = q.get("name", "")
            self._policy(name)
            if any(name in u["policies"] for u in st.users.values()):
                raise AdminError(400, "XMinioAdminPolicyInUse", "policy is in use and cannot be deleted")
            del st.policies[name]
            return ok
        if method == "POST" and command in ("idp/builtin/policy/attach", "idp/builtin/policy/detach"):
            req = self._decrypt(body, record)
            user = self._user(req.get("user", ""))
            names = list(req.get("policies", []))
            for name in names:
                self._policy(name)
            attach = command.endswith("attach") and not command.endswith("detach")
            change = [n for n in names if (n not in user["policies"]) == attach]
            if not change:
                raise AdminError(
                    400, "XMinioAdminPolicyChangeAlreadyApplied", "The specified policy change is already in effect."
                )
            if attach:
                user["policies"].update(change)
            else:
                user["policies"].difference_update(change)
            key = "policiesAttached" if attach else "policiesDetached"
            return self._encrypt({key: change, "updatedAt": datetime.now(UTC).isoformat()})
        if route == ("GET", "list-service-accounts"):
            parent = q.get("user", "")
            self._user(parent)
            accounts = [
                {
                    "parentUser": sa["parent"],
                    "accountStatus": sa["status"],
                    "accessKey": ak,
                    "impliedPolicy": True,
                    "description": sa["description"],
                }
                for ak, sa in sorted(st.service_accounts.items())
                if sa["parent"] == parent
            ]
            return self._encrypt({"accounts": accounts})
        if route == ("PUT", "add-service-account"):
            req = self._decrypt(body, record)
            parent = req.get("targetUser") or self.access_key
            if parent != self.access_key:
                self._user(parent)
            ak, secret = req.get("accessKey") or "", req.get("secretKey") or ""
            if not 3 <= len(ak) <= 20 or not 8 <= len(secret) <= 40:
                raise AdminError(400, "XMinioAdminInvalidArgument", "access key or secret key has a bad length")
            if ak in st.service_accounts or ak in st.users:
                raise AdminError(409, "XMinioAdminServiceAccountExists", "access key already in use")
            st.service_accounts[ak] = {
                "parent": parent,
                "secret": secret,
                "status": "on",
                "description": req.get("description", ""),
            }
            return self._encrypt(
                {"credentials": {"accessKey": ak, "secretKey": secret, "expiration": "1970-01-01T00:00:00Z"}}
            )
        if route == ("POST", "update-service-account"):
            req = self._decrypt(body, record)
            sa = self._service_account(q.get("accessKey", ""))
            status = req.get("newStatus")
            if status is not None:
                mapping = {"on": "on", "enabled": "on", "off": "off", "disabled": "off"}
                if status not in mapping:
                    raise AdminError(400, "XMinioAdminInvalidArgument", "unknown account status value")
                sa["status"] = mapping[status]
            return 204, b"", "application/json"
        if route == ("DELETE", "delete-service-account"):
            ak = q.get("accessKey", "")
            self._service_account(ak)
            del st.service_accounts[ak]
            return 204, b"", "application/json"
        raise AdminError(400, "XMinioAdminUnknownAPI", f"unknown admin API {method} {command}")

    def _user(self, name: str) -> dict[str, Any]:
        if name not in self.state.users:
            raise AdminError(404, "XMinioAdminNoSuchUser", "The specified user does not exist.")
        return self.state.users[name]

    def _policy(self, name: str) -> Any:
        if name not in self.state.policies:
            raise AdminError(404, "XMinioAdminNoSuchPolicy", "The canned policy does not exist.")
        return self.state.policies[name]

    def _service_account(self, ak: str) -> dict[str, Any]:
        if ak not in self.state.service_accounts:
            raise AdminError(404, "XMinioAdminServiceAccountNotFound", "The specified service account is not found")
        return self.state.service_accounts[ak]

    # --- minimal S3 ----------------------------------------------------------------------------------

    def _s3(
        self, method: str, path: str, q: dict[str, str], body: bytes, copy_source: str | None = None
    ) -> tuple[int, bytes, str]:
        bucket, _, key = unquote(path).lstrip("/").partition("/")
        buckets = self.state.buckets
        xml = "application/xml"
        if not key:
            if method == "PUT":
                if bucket in buckets:
                    raise AdminError(409, "BucketAlreadyOwnedByYou", "bucket exists")
                buckets[bucket] = {}
                return 200, b"", xml
            objects = self._bucket(bucket)
            if method == "HEAD":
                return 200, b"", xml
            if method == "GET" and q.get("list-type") == "2":
                prefix = q.get("prefix", "")
                keys = sorted(k for k in objects if k.startswith(prefix))
                items = "".join(f"<Contents><Key>{k}</Key><Size>{len(objects[k])}</Size></Contents>" for k in keys)
                text = (
                    f'<ListBucketResult xmlns="{_S3_NS}"><Name>{bucket}</Name><Prefix>{prefix}</Prefix>'
                    f"<KeyCount>{len(keys)}</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>"
                    f"{items}</ListBucketResult>"
                )
                return 200, text.encode(), xml
            if method == "POST" and "delete" in q:
                root = ET.fromstring(body)  # noqa: S314 (our own test client's XML)
                names = [el.text or "" for el in root.iter() if el.tag.endswith("Key")]
                for name in names:
                    objects.pop(name, None)
                deleted = "".join(f"<Deleted><Key>{n}</Key></Deleted>" for n in names)
                return 200, f'<DeleteResult xmlns="{_S3_NS}">{deleted}</DeleteResult>'.encode(), xml
            raise AdminError(400, "NotImplemented", f"{method} on a bucket is not in this stand-in")
        objects = self._bucket(bucket)
        if method == "PUT" and copy_source:
            source_bucket, _, source_key = unquote(copy_source).lstrip("/").partition("/")
            source = self._bucket(source_bucket)
            if source_key not in source:
                raise AdminError(404, "NoSuchKey", "The specified key does not exist.")
            objects[key] = source[source_key]
            result = (
                f'<CopyObjectResult xmlns="{_S3_NS}"><ETag>"{hashlib.md5(objects[key]).hexdigest()}"</ETag>'  # noqa: S324
                f"<LastModified>{datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%S.000Z')}</LastModified></CopyObjectResult>"
            )
            return 200, result.encode(), xml
        if method == "PUT":
            objects[key] = body
            return 200, b"", xml
        if key not in objects:
            raise AdminError(404, "NoSuchKey", "The specified key does not exist.")
        if method == "HEAD":
            return 200, b"", "application/octet-stream"
        if method == "GET":
            return 200, objects[key], "application/octet-stream"
        if method == "DELETE":
            del objects[key]
            return 204, b"", xml
        raise AdminError(400, "NotImplemented", f"{method} on an object is not in this stand-in")

    def _bucket(self, bucket: str) -> dict[str, bytes]:
        if bucket not in self.state.buckets:
            raise AdminError(404, "NoSuchBucket", "The specified bucket does not exist")
        return self.state.buckets[bucket]
