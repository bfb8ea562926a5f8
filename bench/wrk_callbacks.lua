-- wrk script: POSTs pre-generated, distinct, signed WeCom callbacks (from gen_callbacks), in turn.
-- wrk -s bench/wrk_callbacks.lua URL -- FILE
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
