-- The fair scheduler's candidate query, made independent of table statistics.
--
-- Found by the fleet benchmark: the sender's connections are long-lived and start picking while
-- the outbox is still empty. PL/pgSQL caches a generic plan for each statement after five calls;
-- the plan chosen for empty tables turned the EXISTS tests into semi and anti joins that scan
-- the whole pending-reply index for every tenant (a join filter instead of an index condition),
-- and nothing revisits a cached plan as the outbox grows until ANALYZE runs. With 1,000 tenants
-- and 3,000 pending replies one pick then took ~0.6 s while holding the account's bucket row:
-- one send a second, until a manual ANALYZE brought it back to ~450 a second.
--
-- Correlated scalar subqueries with LIMIT 1 are never pulled up into joins: each stays an index
-- probe per candidate tenant with its id as the index condition, whatever plan is cached.
-- Expand only: the signature is unchanged (CREATE OR REPLACE keeps owner and grants).

create or replace function wafleet_outbox_pick(p_account bigint, p_rate double precision, p_burst double precision,
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
          -- Correlated scalar subqueries, not EXISTS: they stay one index probe per tenant
          -- whatever the statistics say (see the header).
          and (select true from outbox o
               where o.tenant_id = t.tenant_id and o.status = 'pending'
                 and o.next_attempt_at <= v_now and o.expires_at > v_now
               limit 1)
          -- One send in flight per tenant, across every sender lane and replica: its replies
          -- leave in order, and a reply whose previous one is still undecided waits.
          and (select true from outbox s where s.tenant_id = t.tenant_id and s.status = 'sending' limit 1) is null
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
