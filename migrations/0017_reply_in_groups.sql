-- Built-in bots never answer in a group chat unless the tenant allows it: a keyword bot that
-- answers every member of a group is noise nobody asked for. bot_config.reply_in_groups holds the
-- choice; the http bot decides for itself and ignores it.
create function wafleet_set_tenant_reply_in_groups(p_ref text, p_reply boolean)
returns bigint
language sql security definer set search_path = public, pg_temp as $$
    update tenants t
    set bot_config = jsonb_set(t.bot_config, '{reply_in_groups}', to_jsonb(p_reply)), updated_at = now()
    where t.customer_ref = p_ref and t.status <> 'offboarded'
    returning t.tenant_id
$$;
revoke all on function wafleet_set_tenant_reply_in_groups(text, boolean) from public;

insert into wafleet_function_grants (signature, duties, why) values
    ('public.wafleet_set_tenant_reply_in_groups(text,boolean)', array['admin'], 'tenant administration');
