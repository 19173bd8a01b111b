-- oci/media.lua - manifest media types, and the descriptors a manifest
-- refers to.
local media = {
  OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json",
  OCI_INDEX = "application/vnd.oci.image.index.v1+json",
  DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json",
  DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json",
  DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json",
  DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws",
  MAX_MANIFEST = 4 * 1024 * 1024,  -- manifests are read into memory up to this
}

-- The Accept header of manifest requests: every type this client handles.
media.ACCEPT = table.concat({ media.OCI_MANIFEST, media.OCI_INDEX,
                              media.DOCKER_MANIFEST, media.DOCKER_LIST }, ", ")

-- True for the media types of manifest lists (an OCI index or a Docker list).
function media.is_index(media_type)
  return media_type == media.OCI_INDEX or media_type == media.DOCKER_LIST
end

-- True for layers a registry may not redistribute (Docker foreign layers, OCI
-- non-distributable layers): clients fetch them from their own URLs.
function media.is_foreign(media_type)
  return type(media_type) == "string" and (media_type:find(".foreign.", 1, true) ~= nil
    or media_type:find(".nondistributable.", 1, true) ~= nil)
end

-- Returns the media type of a Content-Type value without its parameters.
function media.strip(content_type)
  if type(content_type) ~= "string" then return nil end
  local mt = content_type:match("^%s*([^;%s]+)")
  return mt and mt:lower()
end

-- Returns the media type a decoded manifest declares, or one guessed from its
-- shape (the OCI types make mediaType optional).
function media.detect(doc)
  if type(doc.mediaType) == "string" then return doc.mediaType end
  if doc.schemaVersion == 1 then return media.DOCKER_SCHEMA1 end
  if type(doc.manifests) == "table" then return media.OCI_INDEX end
  if type(doc.config) == "table" then return media.OCI_MANIFEST end
  return nil
end

-- Copies the fields of a descriptor that replication needs; nil, err if the
-- descriptor has no digest or size.
local function descriptor(d, where)
  if type(d) ~= "table" or type(d.digest) ~= "string" or math.type(d.size) ~= "integer" then
    return nil, "manifest: " .. where .. " is not a descriptor with digest and size"
  end
  return { mediaType = d.mediaType, digest = d.digest, size = d.size, platform = d.platform,
           annotations = d.annotations, urls = d.urls, artifactType = d.artifactType }
end

-- Returns the child descriptors of a manifest: an index's manifests, or an
-- image's config then layers. manifest is a get_manifest result, the JSON
-- text, or the decoded table; media_type overrides what the manifest says.
function media.children(manifest, media_type)
  local doc = manifest
  if type(manifest) == "table" and type(manifest.body) == "string" then
    media_type = media_type or manifest.media_type
    doc = manifest.body
  end
  if type(doc) == "string" then
    local err
    doc, err = json.decode(doc)
    if type(doc) ~= "table" then return nil, "manifest: invalid JSON" .. (err and (": " .. err) or "") end
  end
  if type(doc) ~= "table" then return nil, "manifest: expected a table or JSON text" end
  local mt = media_type or media.detect(doc)
  local out = {}
  if media.is_index(mt) then
    for i, d in ipairs(type(doc.manifests) == "table" and doc.manifests or {}) do
      local c, err = descriptor(d, "manifests[" .. i .. "]")
      if not c then return nil, err end
      out[#out + 1] = c
    end
  elseif mt == media.OCI_MANIFEST or mt == media.DOCKER_MANIFEST then
    local c, err = descriptor(doc.config, "config")
    if not c then return nil, err end
    out[1] = c
    for i, d in ipairs(type(doc.layers) == "table" and doc.layers or {}) do
      c, err = descriptor(d, "layers[" .. i .. "]")
      if not c then return nil, err end
      out[#out + 1] = c
    end
  elseif mt == media.DOCKER_SCHEMA1 or mt == media.DOCKER_SCHEMA1_SIGNED then
    return nil, "manifest: Docker schema 1 (" .. mt .. ") is not supported: the format is deprecated"
      .. " and unsigned copies change its digest; push the image again as schema 2 or OCI"
  else
    return nil, "manifest: unsupported media type " .. tostring(mt)
      .. " (replica copies OCI and Docker schema 2 manifests and indexes)"
  end
  return out
end

return media
