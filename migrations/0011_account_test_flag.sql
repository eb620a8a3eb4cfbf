-- Issue #15: an account may point at a loopback base URL only when it is marked as a test
-- account (the simulator); `wafleet accounts add --test-account` sets it. The allow-lists of key
-- references and hosts are checked by the fleet before this function is called.
alter table accounts add column test_account boolean not null default false;

-- Replaced by the six-argument form: a CLI of the previous release, which knows no allow-list,
-- can no longer add accounts.
drop function wafleet_add_account(text, text, text, integer, integer);

create function wafleet_add_account(p_name text, p_key_ref text, p_base_url text, p_rate integer, p_burst integer,
                                    p_test_account boolean)
returns table (account_id bigint, created boolean)
language plpgsql security definer set search_path = public, pg_temp as $$
declare
    existing accounts%rowtype;
begin
    select * into existing from accounts a where a.name = p_name;
    if found then
        if existing.key_ref = p_key_ref and existing.base_url is not distinct from p_base_url
           and existing.rate_per_min is not distinct from p_rate and existing.burst is not distinct from p_burst
           and existing.test_account = p_test_account then
            return query select existing.account_id, false;
            return;
        end if;
        raise exception 'account % already exists with different settings', p_name
            using errcode = 'P0001', hint = 'conflict';
    end if;
    return query
        insert into accounts as a (name, key_ref, base_url, rate_per_min, burst, test_account)
        values (p_name, p_key_ref, p_base_url, p_rate, p_burst, p_test_account)
        returning a.account_id, true;
end
$$;

revoke all on function wafleet_add_account(text, text, text, integer, integer, boolean) from public;
