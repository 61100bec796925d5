-- wrk script: DS webhook notifications, each for a different dossier so each one is stored.
local counter = 0
local next_thread = 1

function setup(thread)
    thread:set("tid", next_thread)
    next_thread = next_thread + 1
end

function request()
    counter = counter + 1
    local body = string.format(
        "procedure_id=12345&dossier_id=%d&state=en_construction&updated_at=2021-06-23%%2010%%3A32%%3A42%%20%%2B0200",
        tid * 100000000 + counter)
    return wrk.format("POST", nil, {["Content-Type"] = "application/x-www-form-urlencoded"}, body)
end
