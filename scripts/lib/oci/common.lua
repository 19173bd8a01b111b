-- oci/common.lua - what the parts of the oci client share: scopes, digests
-- and error messages.
local common = {}

-- Returns the scope that reads repo.
function common.pull(repo)
  return "repository:" .. repo .. ":pull"
end

-- Returns the scope that writes repo (pushing needs pull as well).
function common.push(repo)
  return "repository:" .. repo .. ":pull,push"
end

-- Returns "sha256" (or "sha512") when s is a digest of that algorithm.
function common.digest_alg(s)
  local alg, hex = tostring(s):match("^(sha%d+):(%x+)$")
  if (alg == "sha256" and #hex == 64) or (alg == "sha512" and #hex == 128) then return alg end
  return nil
end

-- Returns the digest of bytes with the algorithm alg (default sha256).
function common.digest_of(bytes, alg)
  alg = alg or "sha256"
  return alg .. ":" .. digest[alg](bytes)
end

-- Builds the error for a non-success response of client reg: "WHAT: http NNN
-- CODE" (or "WHAT: http NNN: message" for a registry's own error body), and
-- its kind.
function common.http_error(what, res, reg)
  local doc = json.decode(res.body or "")
  local e = type(doc) == "table" and type(doc.errors) == "table" and doc.errors[1]
  local code = type(e) == "table" and type(e.code) == "string" and (" " .. e.code) or ""
  -- a registry's own error body, {"error": "..."} or {"message": "..."}
  -- (not the OCI errors list): its message says what the status does not
  local own = code == "" and type(doc) == "table" and (type(doc.error) == "string" and doc.error
              or type(doc.message) == "string" and doc.message)
  if own then code = ": " .. own:sub(1, 200):gsub("[%c]", " ") end
  local hint = ""
  if res.status == 401 then
    hint = reg.auth:has_credentials() and " (the credentials were refused or lack access)"
      or " (the registry needs credentials)"
  end
  local kind = "http " .. res.status
  return string.format("%s: %s%s%s", what, kind, code, hint), kind
end

-- Builds the error for a failed transfer: "WHAT: err (detail)", and its kind.
function common.transfer_error(what, err, detail)
  local extra = detail and detail ~= "" and detail ~= err and (" (" .. detail .. ")") or ""
  return string.format("%s: %s%s", what, err, extra), err
end

return common
