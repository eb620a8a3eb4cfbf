-- Issue #7 items 5 and 6: the `http` bot (the tenant's own bot URL and signing secret on its
-- tenant row) and the isolation canary (no schema of its own: it reads the canary tenants'
-- outbox and message log in their own RLS scope). Expand only: an older worker keeps running
-- while this is applied; it cannot run `http` tenants (unknown bot kind), which it reports as a
-- processing error.
--
-- ISOLATION: the URL and the secret live on the tenant's own row, which the application role
-- reads only in that tenant's scope (RLS). The fleet listings (wafleet_list_tenants*) do not
-- return them, and they are written only through the definer function below.

alter table tenants drop constraint tenants_bot_kind;
alter table tenants add constraint tenants_bot_kind check (bot_kind in ('echo', 'rules', 'http'));

alter table tenants add column bot_url text;
-- HMAC-SHA256 key of the request signature. A credential: shown once by the CLI, never logged,
-- left out of tenant exports.
alter table tenants add column bot_secret text;
alter table tenants add constraint tenants_bot_url_format
    check (bot_url is null or (bot_url ~ '^https?://[^[:space:]]+$' and length(bot_url) <= 2048));
alter table tenants add constraint tenants_bot_secret_length
    check (bot_secret is null or length(bot_secret) between 32 and 256);

-- Sets a tenant's bot. For 'http', p_bot_url and p_bot_secret keep the stored values when null
-- (a URL change without a new secret, or a secret rotation without a new URL), and both must be
-- set afterwards. Any other kind clears the URL, the secret and allow_other_chats. A non-null
-- p_allow_other_chats sets bot_config.allow_other_chats. Returns the tenant id, or null for an
-- unknown or offboarded ref.
create function wafleet_set_tenant_bot(p_ref text, p_bot_kind text, p_bot_url text, p_bot_secret text,
                                       p_allow_other_chats boolean)
returns bigint
language plpgsql security definer set search_path = public, pg_temp as $$
declare
    id bigint;
begin
    if p_bot_kind not in ('echo', 'rules', 'http') then
        raise exception 'bot kind must be echo, rules or http' using errcode = '22023';
    end if;
    if p_bot_kind = 'http' then
        update tenants t set
            bot_kind = 'http',
            bot_url = coalesce(p_bot_url, t.bot_url),
            bot_secret = coalesce(p_bot_secret, t.bot_secret),
            bot_config = case when p_allow_other_chats is null then t.bot_config
                              else jsonb_set(t.bot_config, '{allow_other_chats}', to_jsonb(p_allow_other_chats)) end,
            updated_at = now()
        where t.customer_ref = p_ref and t.status <> 'offboarded'
        returning t.tenant_id into id;
        if id is not null and exists (select 1 from tenants t where t.tenant_id = id
                                      and (t.bot_url is null or t.bot_secret is null)) then
            raise exception 'an http bot needs a URL and a secret' using errcode = '22023';
        end if;
    else
        update tenants t set
            bot_kind = p_bot_kind,
            bot_url = null,
            bot_secret = null,
            bot_config = t.bot_config - 'allow_other_chats',
            updated_at = now()
        where t.customer_ref = p_ref and t.status <> 'offboarded'
        returning t.tenant_id into id;
    end if;
    return id;
end
$$;
revoke all on function wafleet_set_tenant_bot(text, text, text, text, boolean) from public;
