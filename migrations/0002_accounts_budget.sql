-- WA Bridges accounts, the fleet-wide send budget, fair scheduling, per-tenant caps and the
-- operator audit log (issue #5). Runs as the owner. Expand only: workers of the previous release
-- keep working (new tenant columns have defaults, old functions are kept).
--
-- ISOLATION: no new tenant-owned table. `accounts`, `budget_buckets` and `audit_log` hold no
-- tenant data. The new SECURITY DEFINER functions read tenants and outbox rows across tenants for
-- scheduling and reporting and return ids, counts and timestamps only, never a chat or a body.

-- ---------------------------------------------------------------------------------------------
-- Accounts: one WA Bridges API key each, held as a reference (env:VAR or file:/path), never in
-- clear. A null base_url means WA_API_BASE_URL; null rate/burst mean the worker's
-- WAFLEET_SEND_RATE_PER_MIN / WAFLEET_SEND_BURST.
-- ---------------------------------------------------------------------------------------------
create table accounts (
    account_id   bigint generated always as identity primary key,
    name         text not null,
    key_ref      text not null,
    base_url     text,
    rate_per_min integer,
    burst        integer,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    constraint accounts_name_key unique (name),
    constraint accounts_name_format check (name ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    -- A reference, not a key: env:NAME or file:/absolute/path.
    constraint accounts_key_ref_format check (key_ref ~ '^(env:[A-Za-z_][A-Za-z0-9_]*|file:/.+)$' and length(key_ref) <= 4096),
    constraint accounts_base_url_format check (base_url is null or base_url ~ '^https?://'),
    constraint accounts_rate check (rate_per_min is null or rate_per_min between 1 and 100000),
    constraint accounts_burst check (burst is null or burst between 1 and 100000)
);

insert into accounts (name, key_ref, base_url) values ('default', 'env:WA_API_KEY', null);

-- Every tenant belongs to exactly one account. ADD COLUMN with a default fills existing rows
-- without an UPDATE (which FORCE RLS would hide from a non-bypassing owner), and keeps inserts of
-- workers that do not know accounts yet valid.
do $$
declare
    v_default bigint;
begin
    select account_id into v_default from accounts where name = 'default';
    execute format(
        'alter table tenants add column account_id bigint not null default %s references accounts (account_id)',
        v_default);
end
$$;
create index tenants_account on tenants (account_id, tenant_id);

-- Fair share and caps. Null cap = no cap. A "minute" is the budget window
-- (WAFLEET_BUDGET_WINDOW_SECS, 60 in production) and a day is 1440 of them.
alter table tenants
    add column weight integer not null default 1,
    add column max_sends_per_min integer,
    add column max_sends_per_day integer,
    add constraint tenants_weight check (weight between 1 and 100),
    add constraint tenants_max_sends_per_min check (max_sends_per_min is null or max_sends_per_min > 0),
    add constraint tenants_max_sends_per_day check (max_sends_per_day is null or max_sends_per_day > 0);

-- When a send was attempted (the sender's clock), for per-tenant caps and the outbox lag.
alter table outbox add column attempted_at timestamptz;
create index outbox_tenant_attempted on outbox (tenant_id, attempted_at) where attempted_at is not null;
create index outbox_sending_since on outbox (updated_at) where status = 'sending';
create index outbox_pending_expiry on outbox (expires_at) where status = 'pending';
create index outbox_tenant_pending on outbox (tenant_id, created_at, outbox_id) where status = 'pending';

-- ---------------------------------------------------------------------------------------------
-- One token bucket per (account, bucket), shared by every worker replica and the CLI. Updated
-- only by the definer functions below, each in one statement under the row lock.
-- ---------------------------------------------------------------------------------------------
create table budget_buckets (
    account_id   bigint not null references accounts (account_id),
    bucket       text not null,
    tokens       double precision not null,
    refilled_at  timestamptz not null,
    -- A 429 pauses the whole account's bucket until then, for every replica.
    paused_until timestamptz,
    pause_streak integer not null default 0,
    -- Round-robin cursor of the proxy bucket: the tenant served last and how many more
    -- consecutive sends its weight still allows.
    rr_tenant    bigint,
    rr_credit    integer not null default 0,
    primary key (account_id, bucket),
    constraint budget_buckets_bucket check (bucket in ('proxy', 'provision', 'other'))
);

-- ---------------------------------------------------------------------------------------------
-- Operator audit log: tenant-independent, append-only for the application role.
-- ---------------------------------------------------------------------------------------------
create table audit_log (
    audit_id  bigint generated always as identity primary key,
    at        timestamptz not null default now(),
    operator  text not null,
    command   text not null,
    target    text,
    arguments jsonb not null default '{}'::jsonb,
    outcome   text not null,
    detail    text,
    constraint audit_log_outcome check (outcome in ('ok', 'error', 'dry_run'))
);
create index audit_log_at on audit_log (at);

-- ---------------------------------------------------------------------------------------------
-- Budget functions.
-- ---------------------------------------------------------------------------------------------

-- Locks the bucket row (creating it full), refills it by the elapsed time and saves the refill.
-- The lock is held until the caller's transaction ends. Internal helper of the functions below.
create function wafleet_budget_lock(p_account bigint, p_bucket text, p_rate double precision,
                                    p_burst double precision, p_window_secs double precision, p_now timestamptz)
returns budget_buckets
language plpgsql security definer set search_path = public, pg_temp as $$
declare
    b budget_buckets%rowtype;
    v_elapsed double precision;
begin
    if p_rate <= 0 or p_burst < 1 or p_window_secs <= 0 then
        raise exception 'budget rate, burst and window must be positive' using errcode = '22023';
    end if;
    insert into budget_buckets as bb (account_id, bucket, tokens, refilled_at)
    values (p_account, p_bucket, p_burst, p_now)
    on conflict do nothing;
    select * into b from budget_buckets bb where bb.account_id = p_account and bb.bucket = p_bucket for update;
    -- A replica whose clock lags never takes tokens back: elapsed time is never negative.
    v_elapsed := greatest(0, extract(epoch from (p_now - b.refilled_at)));
    b.tokens := least(p_burst, b.tokens + v_elapsed * p_rate / p_window_secs);
    b.refilled_at := greatest(b.refilled_at, p_now);
    update budget_buckets bb set tokens = b.tokens, refilled_at = b.refilled_at
    where bb.account_id = p_account and bb.bucket = p_bucket;
    return b;
end
$$;

-- Takes one token, or says how long to wait (paused by a 429, or empty). For status polls,
-- canaries, provisioning and the other API calls; sends use wafleet_outbox_pick.
create function wafleet_budget_take(p_account bigint, p_bucket text, p_rate double precision,
                                    p_burst double precision, p_window_secs double precision, p_now timestamptz)
returns table (granted boolean, wait_ms bigint, tokens double precision)
language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_now timestamptz := coalesce(p_now, clock_timestamp());
    b budget_buckets%rowtype;
begin
    b := wafleet_budget_lock(p_account, p_bucket, p_rate, p_burst, p_window_secs, v_now);
    if b.paused_until is not null and b.paused_until > v_now then
        return query select false, ceil(extract(epoch from (b.paused_until - v_now)) * 1000)::bigint, b.tokens;
        return;
    end if;
    if b.tokens < 1 then
        return query select false, ceil((1 - b.tokens) * p_window_secs / p_rate * 1000)::bigint, b.tokens;
        return;
    end if;
    update budget_buckets bb set tokens = b.tokens - 1 where bb.account_id = p_account and bb.bucket = p_bucket;
    return query select true, 0::bigint, b.tokens - 1;
end
$$;

-- A 429: pause the account's bucket for every replica. Retry-After when the API sent one, else
-- exponential backoff with full jitter (1 s doubling, capped at the window), growing while 429s
-- keep coming within a window of the previous pause. The bucket is emptied.
create function wafleet_budget_pause(p_account bigint, p_bucket text, p_retry_after_secs double precision,
                                     p_window_secs double precision, p_now timestamptz)
returns timestamptz
language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_now timestamptz := coalesce(p_now, clock_timestamp());
    b budget_buckets%rowtype;
    v_streak integer;
    v_secs double precision;
    v_until timestamptz;
begin
    insert into budget_buckets as bb (account_id, bucket, tokens, refilled_at)
    values (p_account, p_bucket, 0, v_now)
    on conflict do nothing;
    select * into b from budget_buckets bb where bb.account_id = p_account and bb.bucket = p_bucket for update;
    v_streak := case
        when b.paused_until is not null and v_now < b.paused_until + make_interval(secs => p_window_secs)
            then least(b.pause_streak + 1, 16)
        else 0 end;
    v_secs := coalesce(p_retry_after_secs,
                       least(p_window_secs, power(2, v_streak)) * (0.5 + random() * 0.5));
    v_until := greatest(coalesce(b.paused_until, v_now), v_now + make_interval(secs => greatest(v_secs, 0.001)));
    update budget_buckets bb
    set paused_until = v_until, pause_streak = v_streak, tokens = 0, refilled_at = greatest(bb.refilled_at, v_now)
    where bb.account_id = p_account and bb.bucket = p_bucket;
    return v_until;
end
$$;

-- Sends a "minute" or a day of sends of a tenant has attempted, counted up to p_cap.
create function wafleet_tenant_sends_since(p_tenant bigint, p_since timestamptz, p_cap integer)
returns integer
language sql stable security definer set search_path = public, pg_temp as $$
    select count(*)::integer from (
        select 1 from outbox o
        where o.tenant_id = p_tenant and o.attempted_at > p_since and o.status in ('sending', 'sent', 'unknown')
        limit p_cap
    ) s
$$;

-- The fair scheduler of one account, and its token, atomically: refill the proxy bucket; find
-- the account's tenants that may send now (active, bridge not disconnected, under their caps,
-- with a due reply that has not expired); if there are none, take no token ('idle'); if the
-- bucket is paused or empty, say how long to wait ('wait'); otherwise take a token and pick the
-- next tenant by weighted round robin (deficit round robin with unit cost: a tenant gets up to
-- `weight` consecutive sends, then the cursor moves to the next tenant id), and that tenant's
-- oldest due reply. Ids and timestamps only. The bucket row stays locked until the caller's
-- transaction ends, so replicas never pick concurrently for one account.
create function wafleet_outbox_pick(p_account bigint, p_rate double precision, p_burst double precision,
                                    p_window_secs double precision, p_now timestamptz)
returns table (outcome text, outbox_id bigint, tenant_id bigint, wait_ms bigint, tokens double precision)
language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_now timestamptz := coalesce(p_now, clock_timestamp());
    v_minute interval := make_interval(secs => p_window_secs);
    b budget_buckets%rowtype;
    v_ids bigint[];
    v_weights integer[];
    v_pick bigint;
    v_credit integer;
    v_row bigint;
    v_next timestamptz;
    i integer;
begin
    b := wafleet_budget_lock(p_account, 'proxy', p_rate, p_burst, p_window_secs, v_now);
    select array_agg(c.tenant_id order by c.tenant_id), array_agg(c.weight order by c.tenant_id)
    into v_ids, v_weights
    from (
        select t.tenant_id, t.weight from tenants t
        where t.account_id = p_account and t.status = 'active' and t.bridge_state <> 'disconnected'
          and exists (select 1 from outbox o
                      where o.tenant_id = t.tenant_id and o.status = 'pending'
                        and o.next_attempt_at <= v_now and o.expires_at > v_now)
          and (t.max_sends_per_min is null
               or wafleet_tenant_sends_since(t.tenant_id, v_now - v_minute, t.max_sends_per_min) < t.max_sends_per_min)
          and (t.max_sends_per_day is null
               or wafleet_tenant_sends_since(t.tenant_id, v_now - v_minute * 1440, t.max_sends_per_day) < t.max_sends_per_day)
    ) c;
    if v_ids is null then
        -- Nothing sendable: hint when the next retry comes due, so the caller need not poll.
        select min(o.next_attempt_at) into v_next from outbox o
        where o.status = 'pending' and o.next_attempt_at > v_now;
        return query select 'idle'::text, null::bigint, null::bigint,
            case when v_next is null then null
                 else ceil(extract(epoch from (v_next - v_now)) * 1000)::bigint end,
            b.tokens;
        return;
    end if;
    if b.paused_until is not null and b.paused_until > v_now then
        return query select 'wait'::text, null::bigint, null::bigint,
            ceil(extract(epoch from (b.paused_until - v_now)) * 1000)::bigint, b.tokens;
        return;
    end if;
    if b.tokens < 1 then
        return query select 'wait'::text, null::bigint, null::bigint,
            ceil((1 - b.tokens) * p_window_secs / p_rate * 1000)::bigint, b.tokens;
        return;
    end if;
    if b.rr_credit > 0 and b.rr_tenant = any (v_ids) then
        v_pick := b.rr_tenant;
        v_credit := b.rr_credit - 1;
    else
        for i in 1 .. array_length(v_ids, 1) loop
            if v_ids[i] > coalesce(b.rr_tenant, 0) then
                v_pick := v_ids[i];
                v_credit := v_weights[i] - 1;
                exit;
            end if;
        end loop;
        if v_pick is null then
            v_pick := v_ids[1];
            v_credit := v_weights[1] - 1;
        end if;
    end if;
    -- Within a tenant, by creation time.
    select o.outbox_id into v_row from outbox o
    where o.tenant_id = v_pick and o.status = 'pending' and o.next_attempt_at <= v_now and o.expires_at > v_now
    order by o.created_at, o.outbox_id
    limit 1;
    update budget_buckets bb set tokens = b.tokens - 1, rr_tenant = v_pick, rr_credit = v_credit
    where bb.account_id = p_account and bb.bucket = 'proxy';
    return query select 'granted'::text, v_row, v_pick, 0::bigint, b.tokens - 1;
end
$$;

-- Pending replies that can no longer be sent: past their TTL ('expired') or of a tenant that is
-- not active ('cancelled'). The sender settles them in each tenant's own scope, without a token.
create function wafleet_outbox_settle(p_now timestamptz, p_limit integer)
returns table (outbox_id bigint, tenant_id bigint, new_status text)
language sql stable security definer set search_path = public, pg_temp as $$
    (select o.outbox_id, o.tenant_id, 'expired'::text from outbox o
     where o.status = 'pending' and o.expires_at <= coalesce(p_now, now())
     order by o.expires_at limit p_limit)
    union all
    (select o.outbox_id, o.tenant_id, 'cancelled'::text from outbox o
     join tenants t on t.tenant_id = o.tenant_id
     where o.status = 'pending' and t.status <> 'active' and o.expires_at > coalesce(p_now, now())
     limit p_limit)
$$;

-- Rows a crashed sender left in 'sending', on the sender's clock. Ids only.
create function wafleet_outbox_stale_sending_at(p_now timestamptz, p_older_than interval)
returns table (outbox_id bigint, tenant_id bigint)
language sql stable security definer set search_path = public, pg_temp as $$
    select o.outbox_id, o.tenant_id from outbox o
    where o.status = 'sending' and coalesce(o.attempted_at, o.updated_at) < coalesce(p_now, now()) - p_older_than
$$;

-- Per-tenant outbox summary for `wafleet outbox` and the backlog/lag metrics: counts and
-- timestamps only.
create function wafleet_outbox_summary()
returns table (tenant_id bigint, customer_ref text, account_id bigint, tenant_status text, bridge_state text,
               pending bigint, sending bigint, unknown bigint, failed bigint, oldest_pending_at timestamptz,
               max_sends_per_min integer, max_sends_per_day integer)
language sql stable security definer set search_path = public, pg_temp as $$
    select t.tenant_id, t.customer_ref, t.account_id, t.status, t.bridge_state,
           count(*) filter (where o.status = 'pending'),
           count(*) filter (where o.status = 'sending'),
           count(*) filter (where o.status = 'unknown'),
           count(*) filter (where o.status = 'failed'),
           min(o.created_at) filter (where o.status = 'pending'),
           t.max_sends_per_min, t.max_sends_per_day
    from tenants t
    join outbox o on o.tenant_id = t.tenant_id and o.status in ('pending', 'sending', 'unknown', 'failed')
    group by t.tenant_id
    order by t.customer_ref
$$;

-- Bucket state for metrics and `wafleet outbox`.
create function wafleet_budget_state()
returns table (account_id bigint, bucket text, tokens double precision, refilled_at timestamptz,
               paused_until timestamptz)
language sql stable security definer set search_path = public, pg_temp as $$
    select b.account_id, b.bucket, b.tokens, b.refilled_at, b.paused_until from budget_buckets b
    order by b.account_id, b.bucket
$$;

-- ---------------------------------------------------------------------------------------------
-- Accounts and tenant lifecycle.
-- ---------------------------------------------------------------------------------------------

-- Adds an account. Idempotent for identical settings.
create function wafleet_add_account(p_name text, p_key_ref text, p_base_url text, p_rate integer, p_burst integer)
returns table (account_id bigint, created boolean)
language plpgsql security definer set search_path = public, pg_temp as $$
declare
    existing accounts%rowtype;
begin
    select * into existing from accounts a where a.name = p_name;
    if found then
        if existing.key_ref = p_key_ref and existing.base_url is not distinct from p_base_url
           and existing.rate_per_min is not distinct from p_rate and existing.burst is not distinct from p_burst then
            return query select existing.account_id, false;
            return;
        end if;
        raise exception 'account % already exists with different settings', p_name
            using errcode = 'P0001', hint = 'conflict';
    end if;
    return query
        insert into accounts as a (name, key_ref, base_url, rate_per_min, burst)
        values (p_name, p_key_ref, p_base_url, p_rate, p_burst)
        returning a.account_id, true;
end
$$;

-- Adds a tenant in an account (by name). Same rules as wafleet_add_tenant, which stays for
-- workers of the previous release and puts tenants in the default account.
create function wafleet_add_tenant_in_account(p_ref text, p_bridge text, p_bot_kind text, p_auth_mode text,
                                              p_queue_type text, p_account text)
returns table (tenant_id bigint, created boolean)
language plpgsql security definer set search_path = public, pg_temp as $$
declare
    existing tenants%rowtype;
    v_account bigint;
begin
    select a.account_id into v_account from accounts a where a.name = p_account;
    if v_account is null then
        raise exception 'no account named %', p_account using errcode = 'P0001', hint = 'unknown_account';
    end if;
    select * into existing from tenants t where t.customer_ref = p_ref;
    if found then
        if existing.status = 'offboarded' then
            raise exception 'customer_ref % was offboarded and can never be reused', p_ref
                using errcode = 'P0001', hint = 'tombstoned';
        end if;
        if existing.bridge = p_bridge and existing.bot_kind = p_bot_kind and existing.auth_mode = p_auth_mode
           and existing.queue_type = p_queue_type and existing.account_id = v_account then
            return query select existing.tenant_id, false;
            return;
        end if;
        raise exception 'tenant % already exists with different settings', p_ref
            using errcode = 'P0001', hint = 'conflict';
    end if;
    return query
        insert into tenants as t (customer_ref, bridge, bot_kind, auth_mode, queue_type, account_id)
        values (p_ref, p_bridge, p_bot_kind, p_auth_mode, p_queue_type, v_account)
        returning t.tenant_id, true;
end
$$;

-- Weight and caps of a tenant (null caps = no cap).
create function wafleet_set_tenant_limits(p_ref text, p_weight integer, p_per_min integer, p_per_day integer)
returns bigint
language sql security definer set search_path = public, pg_temp as $$
    update tenants t set weight = p_weight, max_sends_per_min = p_per_min, max_sends_per_day = p_per_day,
                         updated_at = now()
    where t.customer_ref = p_ref and t.status <> 'offboarded'
    returning t.tenant_id
$$;

-- Revokes a tenant's webhook URL: the next generation. Other tenants are untouched.
create function wafleet_bump_generation(p_ref text)
returns bigint
language sql security definer set search_path = public, pg_temp as $$
    update tenants t set generation = t.generation + 1, updated_at = now()
    where t.customer_ref = p_ref and t.status <> 'offboarded'
    returning t.generation
$$;

-- Tombstones a tenant. Returns its id and whether it was already offboarded; no row = unknown.
create function wafleet_offboard_tenant(p_ref text)
returns table (tenant_id bigint, already boolean)
language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_id bigint;
    v_status text;
begin
    select t.tenant_id, t.status into v_id, v_status from tenants t where t.customer_ref = p_ref for update;
    if v_id is null then
        return;
    end if;
    if v_status <> 'offboarded' then
        update tenants t set status = 'offboarded', updated_at = now() where t.tenant_id = v_id;
    end if;
    return query select v_id, v_status = 'offboarded';
end
$$;

-- The fleet's bridge metadata for `bridges reconcile` and the lifecycle commands.
create function wafleet_fleet_bridges()
returns table (tenant_id bigint, customer_ref text, bridge text, instance_id bigint, status text,
               account_id bigint, bridge_state text, generation bigint, weight integer,
               max_sends_per_min integer, max_sends_per_day integer)
language sql stable security definer set search_path = public, pg_temp as $$
    select t.tenant_id, t.customer_ref, t.bridge, t.instance_id, t.status, t.account_id, t.bridge_state,
           t.generation, t.weight, t.max_sends_per_min, t.max_sends_per_day
    from tenants t order by t.customer_ref
$$;

revoke all on function wafleet_budget_lock(bigint, text, double precision, double precision, double precision, timestamptz) from public;
revoke all on function wafleet_budget_take(bigint, text, double precision, double precision, double precision, timestamptz) from public;
revoke all on function wafleet_budget_pause(bigint, text, double precision, double precision, timestamptz) from public;
revoke all on function wafleet_tenant_sends_since(bigint, timestamptz, integer) from public;
revoke all on function wafleet_outbox_pick(bigint, double precision, double precision, double precision, timestamptz) from public;
revoke all on function wafleet_outbox_settle(timestamptz, integer) from public;
revoke all on function wafleet_outbox_stale_sending_at(timestamptz, interval) from public;
revoke all on function wafleet_outbox_summary() from public;
revoke all on function wafleet_budget_state() from public;
revoke all on function wafleet_add_account(text, text, text, integer, integer) from public;
revoke all on function wafleet_add_tenant_in_account(text, text, text, text, text, text) from public;
revoke all on function wafleet_set_tenant_limits(text, integer, integer, integer) from public;
revoke all on function wafleet_bump_generation(text) from public;
revoke all on function wafleet_offboard_tenant(text) from public;
revoke all on function wafleet_fleet_bridges() from public;
