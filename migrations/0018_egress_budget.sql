-- WA Bridges limits every client IP to 300 requests a minute across all keys and endpoints. The
-- account buckets cannot see that floor: three accounts at 110 + 5 behind one NAT make ~345 calls a
-- minute. An egress group is the set of processes that share one public IP; every API call takes a
-- token from its group's bucket as well as from its account's, in the same transaction, so a call
-- goes out only with both and a refusal by either returns the other (the caller rolls back).
--
-- Fairness across accounts is stride scheduling with equal strides: each account that calls
-- through a group carries a pass, raised by one per token. While the bucket is short (fewer than
-- two tokens) a token goes to the caller only if no other account that is waiting right now has a
-- smaller pass; otherwise the caller comes back after one token interval, by when the waiting
-- account has taken its token. An account that has not been seen lately (idle, or new) joins at the
-- smallest pass of the accounts seen lately, so idle time is not banked as credit.
--
-- ISOLATION: no tenant data. Groups and shares hold account ids, counters and timestamps, and are
-- written only by the definer functions below.

create table egress_buckets (
    egress_group text primary key,
    tokens       double precision not null,
    refilled_at  timestamptz not null,
    constraint egress_buckets_group_format check (egress_group ~ '^[a-z0-9][a-z0-9_.-]{0,63}$')
);

create table egress_shares (
    egress_group text not null references egress_buckets (egress_group),
    account_id   bigint not null references accounts (account_id) on delete cascade,
    pass         double precision not null,
    -- The account's last request was refused and it is coming back for a token.
    waiting      boolean not null default false,
    seen_at      timestamptz not null,
    primary key (egress_group, account_id)
);

-- Locks the group's row (creating it full) and refills it by the elapsed time; locks the
-- account's share (creating it at the group's floor, or lifting a stale one to it). Internal.
create function wafleet_egress_lock(p_group text, p_account bigint, p_rate double precision,
                                    p_burst double precision, p_window_secs double precision, p_now timestamptz,
                                    out o_tokens double precision, out o_pass double precision)
language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_fresh interval := make_interval(secs => greatest(0.25, 3 * p_window_secs / p_rate));
    v_refilled timestamptz;
    v_floor double precision;
    v_seen timestamptz;
begin
    if p_rate <= 0 or p_burst < 1 or p_window_secs <= 0 then
        raise exception 'egress rate, burst and window must be positive' using errcode = '22023';
    end if;
    insert into egress_buckets (egress_group, tokens, refilled_at) values (p_group, p_burst, p_now)
    on conflict do nothing;
    select e.tokens, e.refilled_at into o_tokens, v_refilled
    from egress_buckets e where e.egress_group = p_group for update;
    -- A replica whose clock lags never takes tokens back: elapsed time is never negative.
    o_tokens := least(p_burst, o_tokens + greatest(0, extract(epoch from (p_now - v_refilled))) * p_rate / p_window_secs);
    update egress_buckets e set tokens = o_tokens, refilled_at = greatest(v_refilled, p_now)
    where e.egress_group = p_group;

    select min(s.pass) into v_floor from egress_shares s
    where s.egress_group = p_group and s.account_id <> p_account and s.seen_at > p_now - v_fresh;
    insert into egress_shares (egress_group, account_id, pass, seen_at)
    values (p_group, p_account, coalesce(v_floor, 0), p_now)
    on conflict do nothing;
    select s.pass, s.seen_at into o_pass, v_seen
    from egress_shares s where s.egress_group = p_group and s.account_id = p_account for update;
    if v_seen <= p_now - v_fresh and v_floor is not null and v_floor > o_pass then
        o_pass := v_floor;
    end if;
end
$$;

-- Takes one token of the group for the account, or says how long to wait. Called inside the
-- caller's transaction, after the account's own token: the group's row stays locked until the
-- caller commits or rolls back. A refusal changes nothing the caller keeps (it rolls back); the
-- caller then records the wait with wafleet_egress_wait.
create function wafleet_egress_take(p_group text, p_account bigint, p_rate double precision,
                                    p_burst double precision, p_window_secs double precision, p_now timestamptz)
returns table (granted boolean, wait_ms bigint, tokens double precision)
language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_now timestamptz := coalesce(p_now, clock_timestamp());
    v_interval double precision := p_window_secs / p_rate;
    v_fresh interval := make_interval(secs => greatest(0.25, 3 * v_interval));
    v_tokens double precision;
    v_pass double precision;
    v_rival double precision;
begin
    select l.o_tokens, l.o_pass into v_tokens, v_pass
    from wafleet_egress_lock(p_group, p_account, p_rate, p_burst, p_window_secs, v_now) l;
    if v_tokens < 1 then
        return query select false, ceil((1 - v_tokens) * v_interval * 1000)::bigint, v_tokens;
        return;
    end if;
    if v_tokens < 2 then
        select min(s.pass) into v_rival from egress_shares s
        where s.egress_group = p_group and s.account_id <> p_account and s.waiting and s.seen_at > v_now - v_fresh;
        if v_rival is not null and v_rival < v_pass then
            return query select false, ceil(least(v_interval, 1.0) * 1000)::bigint, v_tokens;
            return;
        end if;
    end if;
    update egress_buckets e set tokens = v_tokens - 1 where e.egress_group = p_group;
    update egress_shares s set pass = v_pass + 1, waiting = false, seen_at = v_now
    where s.egress_group = p_group and s.account_id = p_account;
    return query select true, 0::bigint, v_tokens - 1;
end
$$;

-- Records that the account was refused a token and is coming back: the fairness rule above gives
-- the next token to the waiting account with the smallest pass. Its own short transaction.
create function wafleet_egress_wait(p_group text, p_account bigint, p_rate double precision,
                                    p_burst double precision, p_window_secs double precision, p_now timestamptz)
returns void
language plpgsql security definer set search_path = public, pg_temp as $$
declare
    v_now timestamptz := coalesce(p_now, clock_timestamp());
    v_tokens double precision;
    v_pass double precision;
begin
    select l.o_tokens, l.o_pass into v_tokens, v_pass
    from wafleet_egress_lock(p_group, p_account, p_rate, p_burst, p_window_secs, v_now) l;
    update egress_shares s set pass = v_pass, waiting = true, seen_at = v_now
    where s.egress_group = p_group and s.account_id = p_account;
end
$$;

-- Tokens, waiting accounts and passes of every group, for gauges and `wafleet outbox`.
create function wafleet_egress_state()
returns table (egress_group text, tokens double precision, refilled_at timestamptz,
               account_id bigint, pass double precision, waiting boolean, seen_at timestamptz)
language sql stable security definer set search_path = public, pg_temp as $$
    select e.egress_group, e.tokens, e.refilled_at, s.account_id, s.pass, s.waiting, s.seen_at
    from egress_buckets e left join egress_shares s using (egress_group)
    order by e.egress_group, s.account_id
$$;

revoke all on function wafleet_egress_lock(text, bigint, double precision, double precision, double precision, timestamptz) from public;
revoke all on function wafleet_egress_take(text, bigint, double precision, double precision, double precision, timestamptz) from public;
revoke all on function wafleet_egress_wait(text, bigint, double precision, double precision, double precision, timestamptz) from public;
revoke all on function wafleet_egress_state() from public;

insert into wafleet_function_grants (signature, duties, why) values
    ('public.wafleet_egress_lock(text,bigint,double precision,double precision,double precision,timestamptz)', array[]::text[],
     'internal to the egress budget functions'),
    ('public.wafleet_egress_take(text,bigint,double precision,double precision,double precision,timestamptz)', array['worker', 'admin'],
     'every WA Bridges call spends its egress group''s budget: the sender''s and the recheck''s, and the CLI''s and API''s'),
    ('public.wafleet_egress_wait(text,bigint,double precision,double precision,double precision,timestamptz)', array['worker', 'admin'],
     'a caller refused an egress token queues for the next one'),
    ('public.wafleet_egress_state()', array['worker', 'admin'], 'egress gauges and summaries');
