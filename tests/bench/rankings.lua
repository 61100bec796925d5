-- wrk script: GET /v1/rankings of one wave and phase, each request filtered on a region drawn
-- at random among the 18 INSEE regions, with an API key.
local regions = {"01", "02", "03", "04", "06", "11", "24", "27", "28", "32", "44", "52", "53",
                 "75", "76", "84", "93", "94"}

function init(args)
    wave = args[1]
    key = args[2]
end

function request()
    local region = regions[math.random(#regions)]
    return wrk.format("GET", "/v1/rankings?wave=" .. wave .. "&phase=1&region=" .. region,
                      {["Authorization"] = "Bearer " .. key})
end
