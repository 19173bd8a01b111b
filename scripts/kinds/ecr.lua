-- kinds/ecr: Amazon ECR. Its registry takes Basic AWS:<password>, where the
-- password comes from the control plane's GetAuthorizationToken, valid for
-- 12 hours; the control plane (AWS JSON 1.1 over POST /, signed with SigV4,
-- service "ecr") also lists repositories (DescribeRepositories, paged by
-- nextToken) and creates them, which must happen before a push
-- (CreateRepository; RepositoryAlreadyExistsException is success), and
-- deletes images (BatchDeleteImage by digest: the registry refuses DELETE).
-- Throttling (400 ThrottlingException, or 429) is retried with backoff.
-- Chunked uploads need at least 5 MiB per chunk but the last.
local sigv4 = require("sigv4")

local kind = {
  description = "Amazon ECR: SigV4 logins, repositories created before a push, deletion through BatchDeleteImage",
  hosts = { "*.dkr.ecr.*.amazonaws.com", "*.dkr.ecr.*.amazonaws.com.cn", "*.dkr.ecr-fips.*.amazonaws.com" },
  credentials = {
    { name = "access_key_id", label = "Access key ID", required = true },
    { name = "secret_access_key", label = "Secret access key", secret = true, required = true },
    { name = "session_token", label = "Session token", secret = true,
      help = "For temporary credentials (STS)." },
    { name = "region", label = "Region", help = "Taken from the registry's host when not given." },
  },
  options = {
    { name = "api_url", label = "Control-plane endpoint", help = "Default https://api.ecr.REGION.amazonaws.com." },
  },
  quirks = { min_chunk = 5 * 1024 * 1024 },
}

local TARGET = "AmazonEC2ContainerRegistry_V20150921."
local ATTEMPTS = 5

-- The region of the registry: the credential's, else from its host.
local function region_of(creds, ctx)
  if creds.region and creds.region ~= "" then return creds.region end
  return tostring(ctx.url):match("%.dkr%.ecr[%w-]*%.([%w-]+)%.amazonaws%.com")
end

-- Calls control-plane operation op with input (a table); returns the
-- decoded answer or nil, err naming the operation and AWS's error type.
local function call(creds, ctx, op, input)
  local region = region_of(creds, ctx)
  if not region then return nil, "ecr: " .. op .. ": no region (give the credential 'region')" end
  local endpoint = (ctx.options or {}).api_url or ("https://api.ecr." .. region .. ".amazonaws.com")
  endpoint = endpoint:gsub("/+$", "") .. "/"
  local body = json.encode(input or {})
  if body == "[]" then body = "{}" end
  for attempt = 1, ATTEMPTS do
    local headers = { ["Content-Type"] = "application/x-amz-json-1.1", ["X-Amz-Target"] = TARGET .. op }
    local signed, serr = sigv4.sign { method = "POST", url = endpoint, headers = headers, body = body,
      access_key = creds.access_key_id, secret_key = creds.secret_access_key,
      session_token = creds.session_token ~= "" and creds.session_token or nil,
      region = region, service = "ecr" }
    if not signed then return nil, "ecr: " .. op .. ": " .. serr end
    for k, v in pairs(signed) do headers[k] = v end
    local res, err, detail = http.request { method = "POST", url = endpoint, headers = headers, body = body,
                                            tls = ctx.tls, timeout = 60 }
    if not res then return nil, string.format("ecr: %s: %s (%s)", op, err, detail or "") end
    local doc = json.decode(res.body or "") or {}
    if res.status == 200 then return doc end
    local etype = tostring(doc.__type or res.headers["x-amzn-errortype"] or doc.code or ("http " .. res.status))
    etype = etype:gsub(":.*$", ""):gsub("^.*#", "")
    local throttled = res.status == 429 or etype == "ThrottlingException" or etype == "ThrottleException"
    if not throttled or attempt == ATTEMPTS then
      return nil, string.format("ecr: %s: %s: %s", op, etype, tostring(doc.message or doc.Message or "")), etype
    end
    local wait = tonumber(res.headers["retry-after"]) or math.min(8, 0.25 * 2 ^ (attempt - 1))
    time.sleep(wait)
  end
end

-- Turns the AWS credentials into the registry's: AWS and the password of
-- GetAuthorizationToken, for as long as it is valid.
function kind.login(creds, ctx)
  local doc, err = call(creds, ctx, "GetAuthorizationToken", {})
  if not doc then return nil, err end
  local data = type(doc.authorizationData) == "table" and doc.authorizationData[1]
  local token = type(data) == "table" and data.authorizationToken
  local plain = type(token) == "string" and base64.decode(token)
  local user, pass = tostring(plain or ""):match("^([^:]+):(.*)$")
  if not user then return nil, "ecr: GetAuthorizationToken: the answer holds no usable authorizationToken" end
  local ttl = 12 * 3600
  if tonumber(data.expiresAt) then ttl = math.max(1, math.min(ttl, tonumber(data.expiresAt) - time.now())) end
  return { username = user, password = pass, expires_in = ttl }
end

-- Lists every repository (DescribeRepositories, following nextToken).
function kind.catalog(creds, ctx)
  local out, token = {}, nil
  repeat
    local doc, err = call(creds, ctx, "DescribeRepositories", { maxResults = 100, nextToken = token })
    if not doc then return nil, err end
    for _, r in ipairs(doc.repositories or {}) do
      if type(r.repositoryName) == "string" then out[#out + 1] = r.repositoryName end
    end
    token = type(doc.nextToken) == "string" and doc.nextToken ~= "" and doc.nextToken or nil
  until not token
  table.sort(out)
  return out
end

-- Creates repository repo unless it exists (an ECR repository is the
-- whole path, so it is its own namespace).
function kind.ensure_namespace(creds, ctx, repo)
  local doc, err, etype = call(creds, ctx, "DescribeRepositories", { repositoryNames = { repo } })
  if doc then return { repository = repo, created = false } end
  if etype ~= "RepositoryNotFoundException" then return nil, err end
  doc, err, etype = call(creds, ctx, "CreateRepository", { repositoryName = repo })
  if doc then return { repository = repo, created = true } end
  if etype == "RepositoryAlreadyExistsException" then return { repository = repo, created = false } end
  return nil, err
end

-- The answer of a delete: {deleted = true} when BatchDeleteImage's doc
-- names the image deleted, {deleted = false} when its only failure is
-- ImageNotFound, else nil, err naming the step and ECR's failureReason.
local function deleted(doc, step)
  for _, f in ipairs(type(doc.failures) == "table" and doc.failures or {}) do
    if type(f) == "table" and f.failureCode ~= "ImageNotFound" then
      return nil, string.format("ecr: %s: BatchDeleteImage: %s: %s", step, tostring(f.failureCode),
                                tostring(f.failureReason or ""))
    end
  end
  local ids = type(doc.imageIds) == "table" and doc.imageIds or {}
  return { deleted = #ids > 0 }
end

-- Deletes the image dgst of repository repo with all its tags
-- (BatchDeleteImage by digest; ECR's registry answers DELETE with 405):
-- {deleted = true}, or {deleted = false} when there is no such image or
-- repository; nil, err otherwise.
function kind.delete(creds, ctx, repo, dgst)
  local step = "deleting image " .. dgst .. " of " .. repo
  local doc, err, etype = call(creds, ctx, "BatchDeleteImage",
                               { repositoryName = repo, imageIds = { { imageDigest = dgst } } })
  if doc then return deleted(doc, step) end
  if etype == "RepositoryNotFoundException" then return { deleted = false } end
  return nil, "ecr: " .. step .. ": " .. tostring(err):gsub("^ecr: ", "")
end

return kind
