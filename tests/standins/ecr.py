#!/usr/bin/env python3
"""tests/standins/ecr.py - an AWS ECR stand-in (registry-kinds.md section 7,
SigV4 per section 9).

    ecr.py --upstream URL --upstream-storage DIR --port-file FILE
           --access-key-id AKID --secret-access-key SECRET --region R
           --account 123456789012 [--token-ttl N]

Listeners:
  api       the api.ecr.<region>.amazonaws.com endpoint: AWS JSON 1.1,
            POST / with X-Amz-Target AmazonEC2ContainerRegistry_V20150921.<Op>,
            SigV4 verified on every call (service ecr, the --region):
            GetAuthorizationToken, CreateRepository, DescribeRepositories,
            DeleteRepository, ListImages, BatchDeleteImage (the record
            names each call's "operation"). Errors are
            {"__type": "...Exception", "message": "..."}.
  registry  the <account>.dkr.ecr.<region>.amazonaws.com host: Basic
            AWS:<password from GetAuthorizationToken>; repositories must
            have been created (404 NAME_UNKNOWN otherwise); a chunked PATCH
            answers 201, and a part after one under 5 MiB is refused; a
            manifest DELETE answers 405 UNSUPPORTED (BatchDeleteImage deletes).
The fault control on the api listener answers ThrottlingException (400) or,
for a 5xx status, ServerException.
"""
import base64
import calendar
import hashlib
import json
import os
import re
import sys
import time
import urllib.parse
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sigv4  # noqa: E402
from common import Standin  # noqa: E402

TARGET_PREFIX = "AmazonEC2ContainerRegistry_V20150921."
REPO_RE = re.compile(r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$")
MIN_PART = 5 * 1024 * 1024
MAX_SKEW = 15 * 60


class AwsError(Exception):
    def __init__(self, status, typ, message):
        super().__init__(message)
        self.status, self.typ, self.message = status, typ, message


class Ecr(Standin):
    kind = "ecr"
    listeners = ("registry", "api")

    @classmethod
    def add_args(cls, p):
        p.add_argument("--access-key-id", required=True)
        p.add_argument("--secret-access-key", required=True)
        p.add_argument("--region", default="us-east-1")
        p.add_argument("--account", default="123456789012")

    def __init__(self, args):
        super().__init__(args)
        self.repos = {}
        self.parts = {}   # upload id -> size of its last PATCH

    def state_json(self):
        return {"repositories": sorted(self.repos)}

    # ---- faults ---------------------------------------------------------------
    def fault(self, req, status, retry_after):
        if req.listener == "api":
            if status >= 500:
                return self.aws_reply(req, AwsError(status, "ServerException", "Internal service error"))
            # [§7 Rate limits] and the brief: throttling is a 400 ThrottlingException.
            return self.aws_reply(req, AwsError(400, "ThrottlingException", "Rate exceeded"))
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        # [§7 Rate limits: goharbor/harbor#13245]; Retry-After is UNVERIFIED for ECR.
        req.reply(status, {"errors": [{"code": "TOOMANYREQUESTS",
                                       "message": "Rate-limit reached, please try again in %s seconds"
                                       % (retry_after if retry_after is not None else 10)}]}, headers)

    # ---- the API ------------------------------------------------------------------
    def route(self, req):
        if req.listener != "api":
            return False
        try:
            if req.command != "POST" or req.url_path != "/":
                raise AwsError(404, "UnknownOperationException", "Unknown operation")
            self.verify(req)
            target = req.headers.get("X-Amz-Target", "")
            if not target.startswith(TARGET_PREFIX):
                raise AwsError(400, "UnknownOperationException", "Unknown operation %s" % target)
            op = getattr(self, "op_" + target[len(TARGET_PREFIX):], None)
            req.note(operation=target[len(TARGET_PREFIX):])
            if op is None:
                raise AwsError(400, "UnknownOperationException", "Unknown operation %s" % target)
            if req.headers.get("Content-Type", "").split(";")[0].strip() != "application/x-amz-json-1.1":
                # UNVERIFIED: the exact answer to another content type.
                raise AwsError(400, "SerializationException", "Content-Type must be application/x-amz-json-1.1")
            body = req.json_body()
            if not isinstance(body, dict):
                # With no input the body must be {} [§7 Wire protocol].
                raise AwsError(400, "SerializationException", "the request body must be a JSON object")
            self.aws_reply(req, None, op(req, body))
        except AwsError as e:
            self.aws_reply(req, e)
        return True

    def aws_reply(self, req, err, result=None):
        headers = {"x-amzn-RequestId": str(uuid.uuid4())}
        if err:
            headers["X-Amzn-Errortype"] = err.typ
            return req.reply(err.status, {"__type": err.typ, "message": err.message}, headers,
                             "application/x-amz-json-1.1")
        req.reply(200, result, headers, "application/x-amz-json-1.1")

    def verify(self, req):
        """SigV4 over what arrived [§9]: credential scope, date, signature."""
        auth = req.headers.get("Authorization")
        if not auth:
            # UNVERIFIED status for ECR (403 as API Gateway-style services answer).
            raise AwsError(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
        parsed = sigv4.parse_authorization(auth)
        if not parsed:
            raise AwsError(400, "IncompleteSignatureException",
                           "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' "
                           "parameters with algorithm AWS4-HMAC-SHA256.")
        akid, date, region, service, term = parsed["credential"]
        if akid != self.args.access_key_id:
            # UNVERIFIED status (400, as other AWS JSON services answer it).
            raise AwsError(400, "UnrecognizedClientException",
                           "The security token included in the request is invalid.")
        if service != "ecr":
            raise AwsError(403, "InvalidSignatureException",
                           "Credential should be scoped to correct service: 'ecr'.")
        if region != self.args.region:
            raise AwsError(403, "InvalidSignatureException",
                           "Credential should be scoped to a valid region, not '%s'." % region)
        if term != "aws4_request":
            raise AwsError(403, "InvalidSignatureException",
                           "Credential should be scoped with a valid terminator: 'aws4_request'.")
        signed = parsed["signed"]
        if "host" not in signed or signed != sorted(signed):
            raise AwsError(403, "InvalidSignatureException",
                           "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
        amz_date = req.headers.get("X-Amz-Date", "")
        try:
            t = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
        except ValueError:
            raise AwsError(400, "IncompleteSignatureException",
                           "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
        if date != amz_date[:8]:
            raise AwsError(403, "InvalidSignatureException",
                           "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
                           "'%s' != '%s', from '%s'." % (date, amz_date[:8], amz_date))
        now = time.time()
        if abs(now - t) > MAX_SKEW:
            raise AwsError(403, "InvalidSignatureException",
                           "Signature expired: %s is now earlier than %s (%s - 15 min.)" % (
                               amz_date, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now - MAX_SKEW)),
                               time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))))
        body = req.body()
        payload = hashlib.sha256(body).hexdigest()
        claimed = req.headers.get("X-Amz-Content-Sha256")
        if claimed and claimed != payload:
            raise AwsError(400, "InvalidSignatureException",
                           "The provided 'x-amz-content-sha256' header does not match what was computed.")
        raw = urllib.parse.urlsplit(req.path)
        creq = sigv4.canonical_request(req.command, raw.path, raw.query, req.headers.items(), signed, payload)
        scope = "%s/%s/%s/aws4_request" % (date, region, service)
        want = sigv4.signature(self.args.secret_access_key, date, region, service,
                               sigv4.string_to_sign(amz_date, scope, creq))
        if not hmac_eq(want, parsed["signature"]):
            raise AwsError(403, "InvalidSignatureException",
                           "The request signature we calculated does not match the signature you provided. "
                           "Check your AWS Secret Access Key and signing method. "
                           "Consult the service documentation for details.")

    # ---- operations [§7; BC shapes] --------------------------------------------
    def registry_id(self, body):
        rid = body.get("registryId", self.args.account)
        if rid != self.args.account:
            # UNVERIFIED: another account's registry (no cross-account access here).
            raise AwsError(400, "InvalidParameterException",
                           "Invalid parameter at 'registryId' failed to satisfy constraint: "
                           "'registry %s is not accessible'" % rid)
        return rid

    def host(self):
        return "127.0.0.1:%d" % self.ports["registry"]

    def repo_json(self, name):
        r = self.repos[name]
        return {"repositoryArn": "arn:aws:ecr:%s:%s:repository/%s" % (self.args.region, self.args.account, name),
                "registryId": self.args.account, "repositoryName": name,
                "repositoryUri": "%s/%s" % (self.host(), name), "createdAt": r["createdAt"],
                "imageTagMutability": r["imageTagMutability"],
                "imageScanningConfiguration": r["imageScanningConfiguration"],
                "encryptionConfiguration": {"encryptionType": "AES256"}}

    def not_found(self, name):
        return AwsError(400, "RepositoryNotFoundException",
                        "The repository with name '%s' does not exist in the registry with id '%s'"
                        % (name, self.args.account))

    def op_GetAuthorizationToken(self, req, body):
        ids = body.get("registryIds") or [self.args.account]
        if not isinstance(ids, list) or not 1 <= len(ids) <= 10 or \
                any(not re.fullmatch(r"\d{12}", str(i)) for i in ids):
            raise AwsError(400, "InvalidParameterException",
                           "Invalid parameter at 'registryIds' failed to satisfy constraint: "
                           "'Member must satisfy constraint: [Member must satisfy regular expression pattern: [0-9]{12}]'")
        out = []
        for rid in ids:
            self.registry_id({"registryId": rid})
            password, rec = self.tokens.issue(secrets_password(), who="AWS")
            out.append({"authorizationToken": base64.b64encode(("AWS:" + password).encode()).decode(),
                        "expiresAt": int(rec["exp"]),
                        "proxyEndpoint": "http://%s" % self.host()})
        return {"authorizationData": out}

    def op_CreateRepository(self, req, body):
        self.registry_id(body)
        name = body.get("repositoryName")
        if not isinstance(name, str):
            raise AwsError(400, "InvalidParameterException",
                           "Invalid parameter at 'repositoryName' failed to satisfy constraint: 'Member must not be null'")
        if not (2 <= len(name) <= 256 and REPO_RE.match(name)):
            raise AwsError(400, "InvalidParameterException",
                           "Invalid parameter at 'repositoryName' failed to satisfy constraint: "
                           "'must satisfy regular expression '%s''" % REPO_RE.pattern[1:-1])
        mut = body.get("imageTagMutability", "MUTABLE")
        if mut not in ("MUTABLE", "IMMUTABLE"):
            raise AwsError(400, "InvalidParameterException",
                           "Invalid parameter at 'imageTagMutability' failed to satisfy constraint: "
                           "'Member must satisfy enum value set: [MUTABLE, IMMUTABLE]'")
        if self.controls["deny_create"]:
            raise AwsError(403, "AccessDeniedException",
                           "User: arn:aws:iam::%s:user/replica is not authorized to perform: ecr:CreateRepository "
                           "on resource: arn:aws:ecr:%s:%s:repository/%s because no identity-based policy allows "
                           "the ecr:CreateRepository action" % (self.args.account, self.args.region,
                                                                 self.args.account, name))
        with self.lock:
            if name in self.repos:
                raise AwsError(400, "RepositoryAlreadyExistsException",
                               "The repository with name '%s' already exists in the registry with id '%s'"
                               % (name, self.args.account))
            self.repos[name] = {"createdAt": round(time.time(), 3), "imageTagMutability": mut,
                                "imageScanningConfiguration": body.get("imageScanningConfiguration")
                                or {"scanOnPush": False}}
        return {"repository": self.repo_json(name)}

    def page_args(self, body, limit):
        """(start offset, maxResults) from nextToken/maxResults."""
        mr = body.get("maxResults")
        if mr is not None and (not isinstance(mr, int) or not 1 <= mr <= limit):
            raise AwsError(400, "InvalidParameterException",
                           "Invalid parameter at 'maxResults' failed to satisfy constraint: "
                           "'Member must have value less than or equal to %d'" % limit)
        start = 0
        tok = body.get("nextToken")
        if tok is not None:
            try:
                start = json.loads(base64.b64decode(tok))["offset"]
            except (ValueError, KeyError, TypeError):
                raise AwsError(400, "InvalidParameterException",
                               "Invalid parameter at 'nextToken' failed to satisfy constraint: "
                               "'Invalid NextToken'")
        return start, mr

    @staticmethod
    def next_token(offset):
        return base64.b64encode(json.dumps({"offset": offset}).encode()).decode()

    def op_DescribeRepositories(self, req, body):
        self.registry_id(body)
        names = body.get("repositoryNames")
        # maxResults: 1-1000 now per a third-party summary, 1-100 in the old
        # model [§7 Listing]: UNVERIFIED, 1000 accepted here.
        start, mr = self.page_args(body, 1000)
        if names is not None:
            if mr is not None or body.get("nextToken") is not None:
                # UNVERIFIED wording.
                raise AwsError(400, "InvalidParameterException",
                               "Invalid parameter at 'maxResults' failed to satisfy constraint: "
                               "'maxResults and nextToken cannot be used with repositoryNames'")
            for n in names:
                if n not in self.repos:
                    raise self.not_found(n)
            return {"repositories": [self.repo_json(n) for n in names]}
        allnames = sorted(self.repos)
        size = mr or 100   # without maxResults: up to 100 and a nextToken
        chunk = allnames[start:start + size]
        out = {"repositories": [self.repo_json(n) for n in chunk]}
        if start + size < len(allnames):
            out["nextToken"] = self.next_token(start + size)
        return out

    def op_DeleteRepository(self, req, body):
        self.registry_id(body)
        name = body.get("repositoryName")
        if name not in self.repos:
            raise self.not_found(name)
        if self.upstream_tags(name) and not body.get("force"):
            raise AwsError(400, "RepositoryNotEmptyException",
                           "The repository with name '%s' in registry with id '%s' cannot be deleted because "
                           "it still contains images" % (name, self.args.account))
        out = self.repo_json(name)
        del self.repos[name]
        return {"repository": out}

    def images(self, name):
        """imageIds of a repository: one per tag (digest + tag)."""
        return [{"imageDigest": d, "imageTag": t} for t, d, _, _ in self.tagged_images(name)]

    def op_ListImages(self, req, body):
        self.registry_id(body)
        name = body.get("repositoryName")
        if name not in self.repos:
            raise self.not_found(name)
        start, mr = self.page_args(body, 1000)
        status = (body.get("filter") or {}).get("tagStatus", "ANY")
        ids = self.images(name) if status in ("ANY", "TAGGED") else []
        size = mr or 100
        out = {"imageIds": ids[start:start + size]}
        if start + size < len(ids):
            out["nextToken"] = self.next_token(start + size)
        return out

    def op_BatchDeleteImage(self, req, body):
        """[§7 Deletion]: by tag removes the tag (and the image with its last
        tag); by digest removes the image and all its tags."""
        self.registry_id(body)
        name = body.get("repositoryName")
        if name not in self.repos:
            raise self.not_found(name)
        ids = body.get("imageIds")
        if not isinstance(ids, list) or not 1 <= len(ids) <= 100:
            raise AwsError(400, "InvalidParameterException",
                           "Invalid parameter at 'imageIds' failed to satisfy constraint: "
                           "'Member must have length between 1 and 100'")
        deleted, failures = [], []
        for iid in ids:
            tag, digest = iid.get("imageTag"), iid.get("imageDigest")
            images = self.images(name)
            if not tag and not digest:
                failures.append({"imageId": iid, "failureCode": "MissingDigestAndTag",
                                 "failureReason": "Invalid request parameters: both tag and digest cannot be null"})
                continue
            if digest and not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
                failures.append({"imageId": iid, "failureCode": "InvalidImageDigest",
                                 "failureReason": "Invalid request parameters: image digest should satisfy the regex "
                                                  "'[a-zA-Z0-9-_+.]+:[a-fA-F0-9]+'"})
                continue
            if tag:
                hit = [i for i in images if i["imageTag"] == tag]
                if not hit:
                    failures.append({"imageId": iid, "failureCode": "ImageNotFound",
                                     "failureReason": "Requested image not found"})
                    continue
                if digest and hit[0]["imageDigest"] != digest:
                    failures.append({"imageId": iid, "failureCode": "ImageTagDoesNotMatchDigest",
                                     "failureReason": "Invalid request parameters: given tag and digest "
                                                      "do not match"})
                    continue
                d = hit[0]["imageDigest"]
                self.upstream_delete_tag(name, tag)
                if not any(i["imageDigest"] == d and i["imageTag"] != tag for i in images):
                    self.upstream_delete_manifest(name, d)
                deleted.append({"imageDigest": d, "imageTag": tag})
                continue
            if not self.upstream_manifest(name, digest):
                failures.append({"imageId": iid, "failureCode": "ImageNotFound",
                                 "failureReason": "Requested image not found"})
                continue
            for i in images:
                if i["imageDigest"] == digest:
                    self.upstream_delete_tag(name, i["imageTag"])
            self.upstream_delete_manifest(name, digest)
            deleted.append({"imageDigest": digest})
        return {"imageIds": deleted, "failures": failures}

    # ---- the registry ---------------------------------------------------------------
    def authorize(self, req, info):
        """Basic AWS:<password> [§7 Auth]."""
        b = req.basic()
        if not b or b[1] is None:
            # UNVERIFIED: the body of ECR's 401 (seen as plain "Not Authorized").
            req.reply(401, "Not Authorized\n", {
                "Www-Authenticate": 'Basic realm="%s/",service="ecr.amazonaws.com"' % req.origin(),
                "Docker-Distribution-Api-Version": "registry/2.0"})
            return False
        state = self.tokens.state(b[1]) if b[0] == "AWS" else "unknown"
        if state == "expired":
            req.reply(403, {"errors": [{"code": "DENIED", "message":
                                        "Your authorization token has expired. Reauthenticate and try again."}]})
            return False
        if state != "live":
            # UNVERIFIED: a password ECR never issued.
            req.reply(401, "Not Authorized\n", {
                "Www-Authenticate": 'Basic realm="%s/",service="ecr.amazonaws.com"' % req.origin()})
            return False
        name = info.get("name")
        if name and name not in self.repos:
            req.reply(404, {"errors": [{"code": "NAME_UNKNOWN", "message":
                                        "The repository with name '%s' does not exist in the registry with id '%s'"
                                        % (name, self.args.account)}]})
            return False
        if info["what"] == "manifest" and req.command == "DELETE":
            # ECR deletes images with BatchDeleteImage [section 7 Deletion];
            # its registry refuses a manifest DELETE. UNVERIFIED: the answer,
            # taken from Docker Hub's (section 2 Deletion: 405 UNSUPPORTED).
            req.reply(405, {"errors": [{"code": "UNSUPPORTED", "message": "The operation is unsupported."}]})
            return False
        if info["what"] == "upload" and info["ref"]:
            has_body = req.command == "PATCH" or (
                req.command == "PUT" and (int(req.headers.get("Content-Length") or 0) > 0 or
                                          "chunked" in req.headers.get("Transfer-Encoding", "")))
            prev = self.parts.get(info["ref"])
            if has_body and prev is not None and prev < MIN_PART:
                # [§7 chunked upload: dotnet/sdk-container-builds#424]; the
                # registry-side code is UNVERIFIED (BLOB_UPLOAD_INVALID chosen).
                req.reply(400, {"errors": [{"code": "BLOB_UPLOAD_INVALID", "message":
                                            "LayerPartTooSmallException: All layer parts except the last part "
                                            "should be at least 5MB"}]})
                return False
        return True

    def proxy_response_headers(self, req, info, status, headers):
        if info and info["what"] == "upload" and req.command == "PATCH" and status == 202:
            # A chunked PATCH answers 201 instead of 202 [§7: openai/tart#273].
            loc = dict((k.lower(), v) for k, v in headers).get("location", "")
            m = re.search(r"/blobs/uploads/([^/?]+)", loc)
            self.parts[m.group(1) if m else info["ref"]] = req.body_sent
            status = 201
        return status, headers


def hmac_eq(a, b):
    import hmac
    return hmac.compare_digest(a, b)


def secrets_password():
    import secrets
    return "eyJwYXlsb2FkIjoi" + secrets.token_urlsafe(96)


if __name__ == "__main__":
    Ecr.main()
