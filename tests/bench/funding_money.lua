-- wrk script: the State's signatures (which commit the agreement's amount on its envelope) and
-- payments of due tranches, mixed, each id used once. The ids file has one "sign <agreement id>"
-- or "pay <tranche id>" a line. Thread k of T takes lines first+k, first+k+T, …; done() writes
-- the next first line to STATE_FILE, so the warm-up and the measured run of wrk_run never reuse
-- an id (a second payment would be a 409). Past the end of the file a thread starts again from
-- the top: those requests are 409s, counted as non-2xx, and done() says so on stderr.
-- Args: IDS_FILE STATE_FILE KEY THREADS (THREADS: wrk's -t, 2 in wrk_run).
local started = {}

function setup(thread)
    started[#started + 1] = thread
    thread:set("tid", #started - 1)
end

function init(args)
    lines = {}
    for line in io.lines(args[1]) do
        lines[#lines + 1] = line
    end
    state_file = args[2]
    key = args[3]
    stride = tonumber(args[4]) or 2
    first = 0
    local f = io.open(state_file, "r")
    if f then
        first = tonumber(f:read("*l")) or 0
        f:close()
    end
    sent = 0
    wrapped = 0
end

function request()
    local i = first + tid + sent * stride
    sent = sent + 1
    if i >= #lines then
        wrapped = wrapped + 1
        i = i % #lines
    end
    local kind, id = lines[i + 1]:match("^(%S+) (%S+)$")
    local headers = {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"}
    if kind == "sign" then
        -- fsm_apply's If-Match: the seed leaves every carrier-signed agreement at version 2.
        headers["If-Match"] = '"v2"'
        return wrk.format("POST", "/v1/agreements/" .. id .. "/signatures", headers,
            '{"signer":"state"}')
    end
    return wrk.format("POST", "/v1/tranches/" .. id .. "/payments", headers,
        string.format('{"reference":"BENCH-%d-%d","paid_on":"2026-03-01"}', tid, sent))
end

function done(summary, latency, requests)
    local most, wrapped_total = 0, 0
    for _, t in ipairs(started) do
        most = math.max(most, t:get("sent") or 0)
        wrapped_total = wrapped_total + (t:get("wrapped") or 0)
    end
    local t0 = started[1]
    local f = assert(io.open(t0:get("state_file"), "w"))
    f:write(string.format("%d\n", t0:get("first") + most * t0:get("stride")))
    f:close()
    if wrapped_total > 0 then
        io.stderr:write(string.format("funding_money.lua: the ids ran out, %d requests reused one\n",
            wrapped_total))
    end
end
