-- wrk script: POSTs pre-generated, distinct, signed WeCom callbacks (from gen_callbacks), in turn.
-- wrk -s bench/wrk_callbacks.lua URL -- FILE   (prints p50, p90, p99 and p99.9 at the end)
local requests = {}
local next_index = 0

function init(args)
  for line in io.lines(args[1]) do
    local path, body = line:match("([^\t]*)\t(.*)")
    requests[#requests + 1] = wrk.format("POST", path, { ["Content-Type"] = "text/xml" }, body)
  end
end

function request()
  next_index = next_index + 1
  if next_index > #requests then next_index = 1 end
  return requests[next_index]
end

function done(summary, latency, requests)
  for _, p in ipairs({ 50, 90, 99, 99.9 }) do
    io.write(string.format("latency p%s %.2f ms\n", p, latency:percentile(p) / 1000))
  end
end
