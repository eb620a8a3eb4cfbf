-- The fair scheduler walks only the tenants that have pending replies, and stops at the first
-- one that may send.
--
-- Found by the fleet benchmark: every pick listed every active, connected tenant of the account
-- and probed the outbox for each (10,000 probes per reply at 10,000 tenants, while holding the
-- account's bucket row, which serialises the picks), so picks cost O(tenants of the account).
-- The round robin only needs the next sendable tenant after the last one served. Candidates now
-- come from the pending replies themselves, in tenant id order after that tenant (wrapping
-- around once): a loose index scan of outbox_tenant_pending yields each tenant with a pending
-- reply once, one index probe each, and each is checked (its row, a due reply, nothing in
-- flight, its caps) until one may send. A pick therefore costs a few probes when the next tenant
-- in turn can send, and at most O(tenants with pending replies) when most of them cannot (all in
-- flight, capped, or of another account). Weights, caps, pauses, bridge state and the order
-- within a tenant are unchanged.
--
-- The plan stays planned per call (force_custom_plan, as 0009 set it; CREATE OR REPLACE resets a
-- function's settings, so it is repeated here). Every statement is a probe by key or an
-- `order by tenant_id limit 1` on a partial index, which the planner answers with that index at
-- every table size, from empty up, so growth cannot flip the plan to a scan.
--
-- Expand only: signature, results, owner and grants of the pick are unchanged (CREATE OR REPLACE
-- keeps owner and grants), so an older worker keeps working while this is applied. The helper is
-- SECURITY INVOKER: called by the pick it runs as the owner; called by anyone else it sees only
-- what RLS shows them.

-- Whether `p_tenant` may send now for `p_account` (its row, a due pending reply, nothing in flight,
-- its caps), as its weight; null when not. Called by the pick as its owner, per candidate.
create function wafleet_outbox_sendable_weight(p_tenant bigint, p_account bigint, p_now timestamptz,
                                              p_minute interval)
returns integer language sql stable set search_path = public, pg_temp as $$
    select t.weight from tenants t
    where t.tenant_id = p_tenant and t.account_id = p_account and t.status = 'active'
      and t.bridge_state <> 'disconnected'
      and exists (select 1 from outbox o
                  where o.tenant_id = t.tenant_id and o.status = 'pending'
                    and o.next_attempt_at <= p_now and o.expires_at > p_now)
      -- One send in flight per tenant, across every sender lane and replica: its replies
      -- leave in order, and a reply whose previous one is still undecided waits.
      and not exists (select 1 from outbox s where s.tenant_id = t.tenant_id and s.status = 'sending')
      and (t.max_sends_per_min is null
           or wafleet_tenant_sends_since(t.tenant_id, p_now - p_minute, t.max_sends_per_min) < t.max_sends_per_min)
      and (t.max_sends_per_day is null
           or wafleet_tenant_sends_since(t.tenant_id, p_now - p_minute * 1440, t.max_sends_per_day) < t.max_sends_per_day)
$$;

create or replace function wafleet_outbox_pick(p_account bigint, p_rate double precision, p_burst double precision,
                                    p_window_secs double precision, p_now timestamptz)
returns table (outcome text, outbox_id bigint, tenant_id bigint, wait_ms bigint, tokens double precision)
language plpgsql security definer set search_path = public, pg_temp
-- Planned for every call with the tables' current sizes (see 0009_pick_plan_stable.sql).
set plan_cache_mode = force_custom_plan as $$
declare
    v_now timestamptz := coalesce(p_now, clock_timestamp());
    v_minute interval := make_interval(secs => p_window_secs);
    b budget_buckets%rowtype;
    v_pick bigint;
    v_weight integer;
    v_credit integer;
    v_from bigint;
    v_candidate bigint;
    v_row bigint;
    v_next timestamptz;
begin
    b := wafleet_budget_lock(p_account, 'proxy', p_rate, p_burst, p_window_secs, v_now);
    -- The tenant whose turn it is keeps it while its weight allows.
    if b.rr_credit > 0 and b.rr_tenant is not null then
        v_weight := wafleet_outbox_sendable_weight(b.rr_tenant, p_account, v_now, v_minute);
        if v_weight is not null then
            v_pick := b.rr_tenant;
            v_credit := b.rr_credit - 1;
        end if;
    end if;
    -- Otherwise the next sendable tenant after it in id order, wrapping around once: candidates
    -- are the tenants with pending replies, in id order, one index probe each (a loose scan of
    -- outbox_tenant_pending), and the walk stops at the first one that may send.
    if v_pick is null then
        for pass in 1 .. 2 loop
            v_from := case when pass = 1 then coalesce(b.rr_tenant, 0) else 0 end;
            for v_candidate in
                with recursive pending(tenant_id) as (
                    (select o.tenant_id from outbox o
                     where o.status = 'pending' and o.tenant_id > v_from order by o.tenant_id limit 1)
                    union all
                    select (select o.tenant_id from outbox o
                            where o.status = 'pending' and o.tenant_id > p.tenant_id order by o.tenant_id limit 1)
                    from pending p where p.tenant_id is not null
                )
                select p.tenant_id from pending p where p.tenant_id is not null
            loop
                v_weight := wafleet_outbox_sendable_weight(v_candidate, p_account, v_now, v_minute);
                if v_weight is not null then
                    v_pick := v_candidate;
                    v_credit := v_weight - 1;
                    exit;
                end if;
            end loop;
            exit when v_pick is not null;
        end loop;
    end if;
    if v_pick is null then
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
