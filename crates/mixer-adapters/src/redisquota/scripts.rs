//! The server-side Lua scripts. Each runs atomically in Redis, so any number of proxies (and
//! threads) sharing a counter never grant past the limit.
//!
//! Both scripts take the same arguments:
//!
//! - `KEYS[1]`: the counter (a hash); `KEYS[2]` (optional): the deduplication record (a hash).
//! - `ARGV`: amount, maxAmount, window (ms), bucket (ms, rolling window only), best effort
//!   (`1`/`0`), deduplication duration (ms).
//!
//! and return `{granted, valid_ms, deduplicated}`.
//!
//! Time is the Redis server's clock (`TIME`), so every proxy sees the same windows regardless of
//! its own clock. A deduplication record remembers `{granted, end of validity}` for the
//! deduplication duration; a request repeating its id within that time gets the first answer
//! back (validity shortened to what is left of it) and is not charged again.

/// Shared prologue: arguments, server time, deduplication lookup, grant rule.
macro_rules! prologue {
    () => {
        r#"
if redis.replicate_commands then redis.replicate_commands() end
local amount = tonumber(ARGV[1])
local max = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local bucket = tonumber(ARGV[4])
local best_effort = ARGV[5] == '1'
local dedup_ms = tonumber(ARGV[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dedup = dedup_ms > 0 and #KEYS > 1
if dedup then
  local prev = redis.call('HMGET', KEYS[2], 'g', 'e')
  if prev[1] and prev[2] then
    local left = tonumber(prev[2]) - now
    if left < 0 then left = 0 end
    return {tonumber(prev[1]), left, 1}
  end
end
local function grant(left)
  if left < 0 then left = 0 end
  if amount <= left then return amount end
  if best_effort then return left end
  return 0
end
local function answer(granted, valid)
  if dedup then
    redis.call('HSET', KEYS[2], 'g', granted, 'e', now + valid)
    redis.call('PEXPIRE', KEYS[2], dedup_ms)
  end
  return {granted, valid, 0}
end
"#
    };
}

/// FIXED_WINDOW: one counter per window; windows are aligned on multiples of the window length
/// of the server's clock (so every proxy agrees on the boundaries). The counter hash holds the
/// window start (`w`) and the units granted in it (`n`) and expires at the window's end.
/// Grants `amount` if it fits in what is left, else (best effort) what is left, else nothing.
/// Valid until the window ends.
pub(crate) const FIXED_WINDOW: &str = concat!(
    prologue!(),
    r#"
local start = now - (now % window)
local ends = start + window
local cur = redis.call('HMGET', KEYS[1], 'w', 'n')
local used = 0
if cur[1] and tonumber(cur[1]) == start then used = tonumber(cur[2]) or 0 end
local granted = grant(max - used)
if granted > 0 then
  redis.call('HSET', KEYS[1], 'w', start, 'n', used + granted)
  redis.call('PEXPIREAT', KEYS[1], ends)
end
return answer(granted, ends - now)
"#
);

/// ROLLING_WINDOW: counts per bucket (hash field = bucket index on the server's clock, value =
/// units granted in that bucket). A bucket counts while any part of it lies within the last
/// window, so a unit stays charged for between one window and one window plus one bucket.
/// Buckets that left the window are deleted; the hash expires one window plus one bucket after
/// the last grant. Valid for one window.
pub(crate) const ROLLING_WINDOW: &str = concat!(
    prologue!(),
    r#"
local oldest = math.floor((now - window) / bucket)
local current = math.floor(now / bucket)
local fields = redis.call('HGETALL', KEYS[1])
local used = 0
for i = 1, #fields, 2 do
  local b = tonumber(fields[i])
  if b == nil or b < oldest then
    redis.call('HDEL', KEYS[1], fields[i])
  else
    used = used + (tonumber(fields[i + 1]) or 0)
  end
end
local granted = grant(max - used)
if granted > 0 then
  redis.call('HINCRBY', KEYS[1], string.format('%d', current), granted)
  redis.call('PEXPIRE', KEYS[1], window + bucket)
end
return answer(granted, window)
"#
);
