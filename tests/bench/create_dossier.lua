-- wrk script: POST /v1/dossiers, each with its own Idempotency-Key so each one is a new dossier.
local counter = 0
local next_thread = 1

function setup(thread)
    thread:set("tid", next_thread)
    next_thread = next_thread + 1
end

function init(args)
    key = args[1]
    body = args[2]
end

function request()
    counter = counter + 1
    return wrk.format("POST", "/v1/dossiers", {
        ["Authorization"] = "Bearer " .. key,
        ["Content-Type"] = "application/json",
        ["Idempotency-Key"] = string.format("wrk-%d-%d", tid, counter),
    }, body)
end
