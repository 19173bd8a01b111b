-- progress.lua - what `replica run` shows while it works. On a terminal: a
-- live view of the running tasks and the totals (tags done of total, bytes,
-- rate), redrawn on stderr. Otherwise: a log line per finished task.
local progress = {}

-- Formats a byte count for people.
function progress.human_bytes(n)
  local units = { "B", "KiB", "MiB", "GiB", "TiB" }
  local i = 1
  while n >= 1024 and i < #units do n, i = n / 1024, i + 1 end
  return i == 1 and string.format("%d B", n) or string.format("%.1f %s", n, units[i])
end

-- Creates the view for a run over tasks.
function progress.new(tasks, opts)
  local total_tags = 0
  for _, t in ipairs(tasks) do total_tags = total_tags + #t.tags end
  local state = { tags = 0, bytes = 0, done = 0, failed = 0, running = {}, order = {} }
  local started = time.mono()
  local view, drawer, lines_drawn = {}, nil, 0
  local live = opts.tty and not opts.json

  local function draw()
    local elapsed = time.mono() - started
    local out = { string.format("\27[%dA", lines_drawn) }
    if lines_drawn == 0 then out[1] = "" end
    local shown = 0
    for _, repo in ipairs(state.order) do
      local stage = state.running[repo]
      if stage and shown < 8 then
        out[#out + 1] = string.format("\r\27[K  %-50s %s\n", repo, stage)
        shown = shown + 1
      end
    end
    out[#out + 1] = string.format("\r\27[K%d/%d repositories, %d/%d tags, %s, %s/s\n",
      state.done, #tasks, state.tags, total_tags, progress.human_bytes(state.bytes),
      progress.human_bytes(elapsed > 0 and state.bytes / elapsed or 0))
    out[#out + 1] = "\27[J"
    term.write(table.concat(out))
    lines_drawn = shown + 1
  end

  function view.task_started(t)
    state.running[t.repository] = "starting"
    state.order[#state.order + 1] = t.repository
  end

  function view.stage(t, name)
    state.running[t.repository] = name
  end

  function view.task_done(t, record)
    state.running[t.repository] = nil
    for i, r in ipairs(state.order) do
      if r == t.repository then table.remove(state.order, i) break end
    end
    state.done = state.done + 1
    if record.status ~= "succeeded" then state.failed = state.failed + 1 end
    if not live then
      log.info("%s -> %s: %s (%d tags)", t.repository, t.dest_repository, record.status, #t.tags)
    end
  end

  -- Called by stages: ("tag", record) when a tag is done, ("bytes", n).
  function view.hook(kind, value)
    if kind == "tag" then state.tags = state.tags + 1
    elseif kind == "bytes" then state.bytes = state.bytes + value end
  end

  function view.finish()
    if drawer then
      drawer:cancel()
      drawer:wait()
      draw()
    end
  end

  if live then
    drawer = task.spawn({ name = "progress" }, function()
      while not task.cancelled() do
        draw()
        if not time.sleep(0.25) then break end
      end
    end)
  end
  return view
end

return progress
