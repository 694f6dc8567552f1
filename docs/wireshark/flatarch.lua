-- flatarch.lua: a Wireshark dissector for the flatarch one-message authentication
-- (docs/protocol.md), on UDP port 7411, and the page broadcasts (JSON) on UDP port 7412.
-- It accepts exactly what agents/auth/messages.py accepts: a datagram the agents would
-- reject is flagged malformed (expert info), decoded only up to the first violation.

local PORT = 7411
local PAGING_PORT = 7412

-- Sizes from agents/auth/messages.py; tests/unit/test_dissector.py checks they match.
local VERSION = 1
local NONCE_LEN = 16
local TAG_LEN = 16
local COOKIE_LEN = 16
local SESSION_ID_LEN = 8
local MAX_ADDRESSES = 16
local MAX_TAL = 8
local MAX_NAME_LEN = 253
local AUTH_FIXED = 44
local AUTH_MIN_LEN = 65
local AUTH_MAX_PLAIN = 1127
local AUTH_MAX_LEN = 1472
local STAPLE_VERSION = 1
local MAX_STAPLE_LEN = 1400
local REPLY_FIXED = 43
local REPLY_MIN_LEN = 60
local REPLY_MAX_LEN = 2381
local REMSK_LEN = 51
local REMSK_ACK_LEN = 59
local FAILURE_LEN = 19
local COOKIE_REPLY_LEN = 35

local T_AUTH, T_REPLY, T_REMSK, T_ACK, T_FAILURE, T_COOKIE, T_REDIRECT = 1, 2, 3, 4, 5, 6, 7
local TYPE_NAMES = {
    [T_AUTH] = "AUTH", [T_REPLY] = "AUTH_REPLY", [T_REMSK] = "REMSK", [T_ACK] = "REMSK_ACK",
    [T_FAILURE] = "FAILURE", [T_COOKIE] = "COOKIE", [T_REDIRECT] = "REDIRECT (reserved)",
}
local SUITES = { [1] = "P256", [2] = "X25519" }

-- AUTH flags, and the AUTH_REPLY's (M is the same bit in both).
local F_M, F_C, F_P, F_I, F_G, F_O, F_S = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x80
local F_T = 0x02
local AUTH_FLAGS = F_M + F_C + F_P + F_I + F_G + F_O + F_S
local REPLY_FLAGS = F_M + F_T

local proto = Proto("flatarch", "flatarch one-message authentication")

local pf = {
    version = ProtoField.uint8("flatarch.version", "Version", base.DEC),
    type = ProtoField.uint8("flatarch.type", "Type", base.DEC, TYPE_NAMES),
    type_name = ProtoField.string("flatarch.type_name", "Message"),
    length = ProtoField.uint16("flatarch.length", "Length", base.DEC),
    flags = ProtoField.uint8("flatarch.flags", "Flags", base.HEX),
    flag_m = ProtoField.bool("flatarch.flags.m", "M: mobility management", 8, nil, F_M),
    flag_c = ProtoField.bool("flatarch.flags.c", "C: cookie present", 8, nil, F_C),
    flag_p = ProtoField.bool("flatarch.flags.p", "P: previous authenticator named", 8, nil, F_P),
    flag_i = ProtoField.bool("flatarch.flags.i", "I: the MN goes idle", 8, nil, F_I),
    flag_g = ProtoField.bool("flatarch.flags.g", "G: page", 8, nil, F_G),
    flag_o = ProtoField.bool("flatarch.flags.o", "O: origin timestamp follows", 8, nil, F_O),
    flag_s = ProtoField.bool("flatarch.flags.s", "S: stapled DNSSEC bundle", 8, nil, F_S),
    staple_version = ProtoField.uint8("flatarch.staple.version", "Staple version"),
    staple_len = ProtoField.uint16("flatarch.staple.length", "Staple length"),
    staple = ProtoField.bytes("flatarch.staple", "Stapled DNSSEC bundle (DNS wire format)"),
    flag_t = ProtoField.bool("flatarch.flags.t", "T: Tracking Area List follows", 8, nil, F_T),
    flags_text = ProtoField.string("flatarch.flags.set", "Flags set"),
    suite = ProtoField.uint8("flatarch.suite", "Suite", base.DEC, SUITES),
    timestamp = ProtoField.uint64("flatarch.timestamp", "Timestamp (us since 1970)", base.DEC),
    time = ProtoField.absolute_time("flatarch.time", "Timestamp", base.UTC),
    peer_nonce = ProtoField.bytes("flatarch.peer_nonce", "Peer nonce Np"),
    auth_nonce = ProtoField.bytes("flatarch.auth_nonce", "Authenticator nonce Na"),
    name_len = ProtoField.uint8("flatarch.name_len", "Name length", base.DEC),
    peer_name = ProtoField.string("flatarch.peer_name", "Peer name"),
    auth_name = ProtoField.string("flatarch.auth_name", "Authenticator name"),
    previous = ProtoField.string("flatarch.previous", "Previous authenticator"),
    origin = ProtoField.uint64("flatarch.origin", "Origin: the MN's AUTH timestamp (us)", base.DEC),
    addr_count = ProtoField.uint8("flatarch.addr_count", "Address count", base.DEC),
    addr = ProtoField.string("flatarch.addr", "Address"),
    family = ProtoField.uint8("flatarch.addr.family", "Family", base.DEC,
                              { [4] = "IPv4", [6] = "IPv6" }),
    plen = ProtoField.uint8("flatarch.addr.plen", "Prefix length", base.DEC),
    ipv4 = ProtoField.ipv4("flatarch.addr.ipv4", "IPv4 network"),
    ipv6 = ProtoField.ipv6("flatarch.addr.ipv6", "IPv6 network"),
    cookie = ProtoField.bytes("flatarch.cookie", "Cookie"),
    tag = ProtoField.bytes("flatarch.tag", "Tag (HMAC-SHA-256/128)"),
    session_id = ProtoField.bytes("flatarch.session_id", "Session id"),
    tal_count = ProtoField.uint8("flatarch.tal_count", "Tracking Area List count", base.DEC),
    tal_name = ProtoField.string("flatarch.tal", "Tracking area AR"),
    nonce = ProtoField.bytes("flatarch.nonce", "Sender's fresh nonce"),
    echo = ProtoField.bytes("flatarch.echo", "Echo"),
}
local fields = {}
for _, f in pairs(pf) do fields[#fields + 1] = f end
proto.fields = fields

local ef_malformed = ProtoExpert.new("flatarch.malformed", "Malformed flatarch message",
                                     expert.group.MALFORMED, expert.severity.ERROR)
proto.experts = { ef_malformed }

-- A violation: parsing stops there and the rest of the datagram is left undecoded.
local Violation = {}

local function reject(msg, off, len)
    error(setmetatable({ msg = msg, off = off, len = len }, Violation), 0)
end

-- Lowercase LDH labels of 1-63 octets, not starting or ending in '-', 1-253 octets in all.
local function canonical(s)
    if #s < 1 or #s > MAX_NAME_LEN then return false end
    for label in (s .. "."):gmatch("(.-)%.") do
        if #label < 1 or #label > 63 or not label:match("^[a-z0-9-]+$")
            or label:sub(1, 1) == "-" or label:sub(-1) == "-" then
            return false
        end
    end
    return true
end

local function name_at(tvb, tree, field, off, stop, what)
    -- A length-prefixed name starting at off, which must end at or before stop.
    if off >= stop then reject(what .. " missing", off, 1) end
    local n = tvb(off, 1):uint()
    if off + 1 + n > stop then reject(what .. " cut short", off, 1) end
    local raw = n > 0 and tvb:raw(off + 1, n) or ""
    if not canonical(raw) then reject(what .. " is not a canonical DNS name", off, 1 + n) end
    local sub = tree:add(field, tvb(off + 1, n))
    sub:add(pf.name_len, tvb(off, 1))
    return raw, off + 1 + n
end

local function host_bits_clear(tvb, off, size, plen)
    for i = 0, size - 1 do
        local keep = math.max(0, math.min(8, plen - 8 * i))
        if tvb(off + i, 1):uint() % (2 ^ (8 - keep)) ~= 0 then return false end
    end
    return true
end

-- An address list (count, then family/prefix length/address items) filling [off, stop).
local function address_list(tvb, tree, off, stop, out)
    local count = tvb(off, 1):uint()
    local list = tree:add(tvb(off, stop - off), "Address list")
    list:add(pf.addr_count, tvb(off, 1))
    if count > MAX_ADDRESSES then
        reject("address count " .. count .. " exceeds " .. MAX_ADDRESSES, off, 1)
    end
    local pos = off + 1
    local seen = {}
    for _ = 1, count do
        if pos >= stop then reject("address list cut short", off, stop - off) end
        local family = tvb(pos, 1):uint()
        local size = family == 4 and 6 or 18
        if pos + size > stop then reject("address cut short", pos, stop - pos) end
        local plen = tvb(pos + 1, 1):uint()
        local item = tvb:raw(pos, size)
        if seen[item] then reject("duplicate address in list", pos, size) end
        seen[item] = true
        if not ((family == 4 and plen <= 32) or (family == 6 and plen <= 128)) then
            reject("bad address family " .. family .. " / prefix length " .. plen, pos, 2)
        end
        if not host_bits_clear(tvb, pos + 2, size - 2, plen) then
            reject("address has host bits set beyond its prefix length", pos, size)
        end
        local text
        local a = tvb(pos + 2, size - 2)
        if family == 4 then text = tostring(a:ipv4()) else text = tostring(a:ipv6()) end
        text = text .. "/" .. plen
        local sub = list:add(pf.addr, tvb(pos, size), text)
        sub:add(pf.family, tvb(pos, 1))
        sub:add(pf.plen, tvb(pos + 1, 1))
        sub:add(family == 4 and pf.ipv4 or pf.ipv6, a)
        out[#out + 1] = text
        pos = pos + size
    end
    if pos ~= stop then
        reject((stop - pos) .. " unexpected octets after the address list", pos, stop - pos)
    end
end

-- Where the address list at off ends, without decoding it (the Tracking Area List follows).
local function address_list_end(tvb, off, stop)
    if off >= stop then reject("address list missing", off, 1) end
    local count = tvb(off, 1):uint()
    if count > MAX_ADDRESSES then
        reject("address count " .. count .. " exceeds " .. MAX_ADDRESSES, off, 1)
    end
    local pos = off + 1
    for _ = 1, count do
        if pos >= stop then reject("address list cut short", off, stop - off) end
        pos = pos + (tvb(pos, 1):uint() == 4 and 6 or 18)
    end
    if pos > stop then reject("address cut short", off, stop - off) end
    return pos
end

-- Bit tests by arithmetic: bit32 is gone from Lua 5.3+, which newer Wireshark builds use.
local function has(value, bit)
    return math.floor(value / bit) % 2 == 1
end

local function undefined_bits(value, defined)
    local out, bit = 0, 1
    while bit < 256 do
        if has(value, bit) and not has(defined, bit) then out = out + bit end
        bit = bit * 2
    end
    return out
end

local function flags_field(tvb, tree, defined, bits, info)
    local value = tvb(2, 1):uint()
    local item = tree:add(pf.flags, tvb(2, 1))
    local set = {}
    for _, b in ipairs(bits) do
        item:add(b[2], tvb(2, 1))
        if has(value, b[1]) then set[#set + 1] = b[3] end
    end
    local text = table.concat(set, ",")
    tree:add(pf.flags_text, tvb(2, 1), text):set_generated()
    if #set > 0 then info[#info + 1] = "[" .. text .. "]" end
    local undefined = undefined_bits(value, defined)
    if undefined ~= 0 then reject(string.format("undefined flags 0x%02x", undefined), 2, 1) end
    return value
end

local function timestamp(tvb, tree, off)
    local us = tvb(off, 8):uint64()
    tree:add(pf.timestamp, tvb(off, 8))
    local secs = (us / 1000000):tonumber()
    local nsecs = (us % 1000000):tonumber() * 1000
    tree:add(pf.time, tvb(off, 8), NSTime.new(secs, nsecs)):set_generated()
end

local function exact(tvb, want, what)
    if tvb:len() ~= want then
        reject(what .. " of " .. tvb:len() .. " octets is not " .. want, 0, tvb:len())
    end
end

local function bounds(tvb, min, max, what)
    local n = tvb:len()
    if n < min then reject(what .. " of " .. n .. " octets is shorter than " .. min, 0, n) end
    if n > max then reject(what .. " of " .. n .. " octets is longer than " .. max, 0, n) end
end

local function no_flags(tvb, tree)
    tree:add(pf.flags, tvb(2, 1))
    local f = tvb(2, 1):uint()
    if f ~= 0 then reject(string.format("undefined flags 0x%02x", f), 2, 1) end
end

local function dissect_auth(tvb, tree, info)
    bounds(tvb, AUTH_MIN_LEN, AUTH_MAX_LEN, "AUTH")
    local n = tvb:len()
    local flags = flags_field(tvb, tree, AUTH_FLAGS, {
        { F_M, pf.flag_m, "M" }, { F_C, pf.flag_c, "C" }, { F_P, pf.flag_p, "P" },
        { F_I, pf.flag_i, "I" }, { F_G, pf.flag_g, "G" }, { F_O, pf.flag_o, "O" },
        { F_S, pf.flag_s, "S" } }, info)
    if has(flags, F_O) and not has(flags, F_M) then reject("flag O (origin) without flag M", 2, 1) end
    if n > AUTH_MAX_PLAIN and not has(flags, F_S) then
        reject("AUTH of " .. n .. " octets without a staple exceeds " .. AUTH_MAX_PLAIN, 0, n)
    end
    tree:add(pf.suite, tvb(3, 1))
    local suite = tvb(3, 1):uint()
    if not SUITES[suite] then reject("unknown suite " .. suite, 3, 1) end
    timestamp(tvb, tree, 4)
    tree:add(pf.peer_nonce, tvb(12, NONCE_LEN))
    tree:add(pf.auth_nonce, tvb(28, NONCE_LEN))
    local stop = n - TAG_LEN
    local peer, off = name_at(tvb, tree, pf.peer_name, AUTH_FIXED, stop, "peer name")
    if off >= stop then reject("peer name cut short", AUTH_FIXED, off - AUTH_FIXED) end
    local auth
    auth, off = name_at(tvb, tree, pf.auth_name, off, stop, "authenticator name")
    info[#info + 1] = peer .. " -> " .. auth
    if has(flags, F_P) then
        local prev
        prev, off = name_at(tvb, tree, pf.previous, off, stop, "previous authenticator name")
        info[#info + 1] = "previous " .. prev
    end
    if has(flags, F_O) then
        -- docs/protocol.md 6.1: the MN's AUTH timestamp a redirect follows, 8 octets.
        if off + 8 > stop then reject("origin timestamp cut short", off, stop - off) end
        tree:add(pf.origin, tvb(off, 8))
        off = off + 8
    end
    if has(flags, F_S) then
        -- docs/protocol.md 6.9: version, a 16-bit length, the bundle (parsed by the AR).
        if off + 3 > stop then reject("staple header cut short", off, stop - off) end
        local version, length = tvb(off, 1):uint(), tvb(off + 1, 2):uint()
        local st = tree:add(tvb(off, math.min(3 + length, stop - off)), "Staple")
        st:add(pf.staple_version, tvb(off, 1))
        if version ~= STAPLE_VERSION then reject("staple version " .. version, off, 1) end
        st:add(pf.staple_len, tvb(off + 1, 2))
        if length == 0 or length > MAX_STAPLE_LEN then
            reject("staple length " .. length .. " is not 1 to " .. MAX_STAPLE_LEN, off + 1, 2)
        end
        if off + 3 + length >= stop then reject("staple cut short", off, stop - off) end
        st:add(pf.staple, tvb(off + 3, length))
        info[#info + 1] = "staple " .. length .. " octets"
        off = off + 3 + length
    end
    if has(flags, F_C) then stop = stop - COOKIE_LEN end
    if off >= stop then reject("address list missing", off, n - off) end
    local addrs = {}
    address_list(tvb, tree, off, stop, addrs)
    if #addrs > 0 then info[#info + 1] = table.concat(addrs, " ") end
    if has(flags, F_C) then tree:add(pf.cookie, tvb(stop, COOKIE_LEN)) end
    tree:add(pf.tag, tvb(n - TAG_LEN, TAG_LEN))
end

local function dissect_reply(tvb, tree, info)
    bounds(tvb, REPLY_MIN_LEN, REPLY_MAX_LEN, "AUTH_REPLY")
    local n = tvb:len()
    local flags = flags_field(tvb, tree, REPLY_FLAGS,
                              { { F_M, pf.flag_m, "M" }, { F_T, pf.flag_t, "T" } }, info)
    tree:add(pf.session_id, tvb(3, SESSION_ID_LEN))
    tree:add(pf.peer_nonce, tvb(11, NONCE_LEN))
    tree:add(pf.auth_nonce, tvb(27, NONCE_LEN))
    local stop = n - TAG_LEN
    local mid = stop
    if has(flags, F_T) then mid = address_list_end(tvb, REPLY_FIXED, stop) end
    local addrs = {}
    address_list(tvb, tree, REPLY_FIXED, mid, addrs)
    info[#info + 1] = #addrs > 0 and ("re-routed " .. table.concat(addrs, " "))
        or "re-routed nothing"
    if has(flags, F_T) then
        if mid >= stop then reject("tracking area list missing", mid, 1) end
        local count = tvb(mid, 1):uint()
        local tal = tree:add(tvb(mid, stop - mid), "Tracking Area List")
        tal:add(pf.tal_count, tvb(mid, 1))
        if count > MAX_TAL then
            reject("tracking area count " .. count .. " exceeds " .. MAX_TAL, mid, 1)
        end
        if count == 0 then reject("TAL flag set with an empty list", mid, 1) end
        local off = mid + 1
        local names = {}
        for _ = 1, count do
            if off >= stop then reject("tracking area list cut short", mid, stop - mid) end
            local name
            name, off = name_at(tvb, tal, pf.tal_name, off, stop, "tracking area")
            names[#names + 1] = name
        end
        if off ~= stop then
            reject((stop - off) .. " unexpected octets after the tracking area list",
                   off, stop - off)
        end
        info[#info + 1] = "TAL " .. table.concat(names, " ")
    end
    tree:add(pf.tag, tvb(n - TAG_LEN, TAG_LEN))
end

-- A fixed-size, flag-less message: its fields in order after the 3-octet header, each
-- {field, octets}; TIMESTAMP stands for the 8-octet timestamp and its decoded time.
local TIMESTAMP = {}

local function fixed(what, len, fields)
    return function(tvb, tree, _)
        exact(tvb, len, what)
        no_flags(tvb, tree)
        local off = 3
        for _, f in ipairs(fields) do
            local field, octets = f[1], f[2]
            if field == TIMESTAMP then
                timestamp(tvb, tree, off)
            else
                tree:add(field, tvb(off, octets))
            end
            off = off + octets
        end
    end
end

local dissect_remsk = fixed("REMSK", REMSK_LEN, {
    { pf.session_id, SESSION_ID_LEN }, { TIMESTAMP, 8 }, { pf.nonce, NONCE_LEN },
    { pf.tag, TAG_LEN } })
local dissect_ack = fixed("REMSK_ACK", REMSK_ACK_LEN, {
    { pf.session_id, SESSION_ID_LEN }, { pf.echo, NONCE_LEN }, { pf.nonce, NONCE_LEN },
    { pf.tag, TAG_LEN } })
local dissect_failure = fixed("FAILURE", FAILURE_LEN, { { pf.echo, NONCE_LEN } })
local dissect_cookie = fixed("COOKIE", COOKIE_REPLY_LEN,
                             { { pf.echo, NONCE_LEN }, { pf.cookie, COOKIE_LEN } })

local BODY = {
    [T_AUTH] = dissect_auth, [T_REPLY] = dissect_reply, [T_REMSK] = dissect_remsk,
    [T_ACK] = dissect_ack, [T_FAILURE] = dissect_failure, [T_COOKIE] = dissect_cookie,
}

local function dissect(tvb, tree, info)
    local n = tvb:len()
    if n < 3 then reject(n .. " octets is shorter than the header", 0, n) end
    tree:add(pf.version, tvb(0, 1))
    local version = tvb(0, 1):uint()
    if version ~= VERSION then reject("version " .. version .. " is not " .. VERSION, 0, 1) end
    local t = tvb(1, 1):uint()
    tree:add(pf.type, tvb(1, 1))
    local body = BODY[t]
    info[1] = TYPE_NAMES[t] or ("type " .. t)
    if body == nil then reject("type " .. t .. " is not defined", 1, 1) end
    tree:add(pf.type_name, tvb(1, 1), TYPE_NAMES[t]):set_generated()
    body(tvb, tree, info)
end

function proto.dissector(tvb, pinfo, root)
    pinfo.cols.protocol = "FLATARCH"
    local tree = root:add(proto, tvb())
    tree:add(pf.length, tvb(), tvb:len()):set_generated()
    local info = {}
    local ok, err = pcall(dissect, tvb, tree, info)
    if not ok then
        if getmetatable(err) ~= Violation then error(err, 0) end
        local n = tvb:len()
        local off = math.min(err.off, math.max(n - 1, 0))
        local len = math.max(0, math.min(err.len or 1, n - off))
        if n == 0 then
            tree:add_proto_expert_info(ef_malformed, err.msg)
        else
            tree:add_tvb_expert_info(ef_malformed, tvb(off, len), err.msg)
        end
        table.insert(info, 1, "[Malformed: " .. err.msg .. "]")
    end
    local text = table.concat(info, " ")
    pinfo.cols.info = text
    tree:append_text(", " .. text)
    return tvb:len()
end

local udp = DissectorTable.get("udp.port")
udp:add(PORT, proto)

-- Pages on the access link are a small JSON document (agents/paging.py).
local page = Proto("flatarch_page", "flatarch page broadcast")
local json = Dissector.get("json")

function page.dissector(tvb, pinfo, root)
    root:add(page, tvb())
    json:call(tvb, pinfo, root)
    pinfo.cols.protocol = "FLATARCH page"
    return tvb:len()
end

udp:add(PAGING_PORT, page)

-- DHCP option 224 (docs/protocol.md 14.3): the DNS name of the MN's Home Agent. Wireshark's
-- DHCP dissector hands us the option's value; option 82 it decodes itself.
local OPT_HOME_AGENT = 224
local ha = Proto("flatarch_dhcp", "flatarch DHCP Home Agent option")
local pf_ha = ProtoField.string("flatarch.dhcp.home_agent", "Home Agent")
local ef_ha = ProtoExpert.new("flatarch.dhcp.malformed", "Malformed Home Agent option",
                              expert.group.MALFORMED, expert.severity.ERROR)
ha.fields = { pf_ha }
ha.experts = { ef_ha }

function ha.dissector(tvb, pinfo, tree)
    local n = tvb:len()
    if n == 0 then
        tree:add_proto_expert_info(ef_ha, "empty Home Agent name")
        return 0
    end
    local item = tree:add(pf_ha, tvb())
    -- What agents/dhcp.py refuses: non-ASCII octets and blanks (Python's isspace()).
    if tvb:raw():find("[%s\28-\31\128-\255]") then
        item:add_tvb_expert_info(ef_ha, tvb(), "Home Agent name is not ASCII or has blanks")
    end
    return n
end

local dhcp_options = DissectorTable.get("dhcp.option")
if dhcp_options ~= nil then dhcp_options:add(OPT_HOME_AGENT, ha) end

-- Option 82's Agent Remote ID is the MN's DNS name (docs/protocol.md 14.4); Wireshark shows it
-- as octets, so a post-dissector repeats it as text.
local relay = Proto("flatarch_relay", "flatarch DHCP relay remote ID")
local pf_remote = ProtoField.string("flatarch.dhcp.remote_id", "MN (Agent Remote ID)")
relay.fields = { pf_remote }
local remote_id = Field.new("dhcp.option.agent_information_option.agent_remote_id")

function relay.dissector(tvb, pinfo, tree)
    for _, fi in ipairs({ remote_id() }) do
        local r = fi.range
        if r ~= nil and r:len() > 0 then
            tree:add(relay, r):add(pf_remote, r)
        end
    end
end

register_postdissector(relay)
