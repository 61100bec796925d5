-- wrk script: GET /v1/stats/money?wave= rotating over the waves given, with a dashboard key.
-- Args: KEY WAVE…
local n = 0

function init(args)
    key = args[1]
    waves = {}
    for i = 2, #args do
        waves[#waves + 1] = args[i]
    end
end

function request()
    n = n + 1
    local wave = waves[(n % #waves) + 1]
    return wrk.format("GET", "/v1/stats/money?wave=" .. wave, {["Authorization"] = "Bearer " .. key})
end
