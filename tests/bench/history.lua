-- wrk script: GET /v1/dossiers/{id}/history over ids read from a file, with an API key.
local ids = {}

function init(args)
    for line in io.lines(args[1]) do
        ids[#ids + 1] = line
    end
    key = args[2]
end

function request()
    local id = ids[math.random(#ids)]
    return wrk.format("GET", "/v1/dossiers/" .. id .. "/history", {["Authorization"] = "Bearer " .. key})
end
