-- Admin token scopes instead of read-only/full. A scope is a kind of power: read (fleet state),
-- credentials (webhook URLs), pii (message bodies, exports), write (changes and anything that
-- spends send budget), admin (tokens). Runs as the owner.
--
-- Breaking by design: a read-only token becomes `read` alone and so loses the webhook URLs it
-- could read before (a URL lets anyone make the tenant's bot answer). A full token gets every
-- scope, so it keeps what it could do.
alter table admin_tokens add column scopes text[];
update admin_tokens
   set scopes = case when read_only then array['read']
                     else array['read', 'credentials', 'pii', 'write', 'admin'] end;
alter table admin_tokens alter column scopes set not null;
alter table admin_tokens add constraint admin_tokens_scopes_known
    check (cardinality(scopes) >= 1 and scopes <@ array['read', 'credentials', 'pii', 'write', 'admin']);

-- A CLI of the previous release (during a rolling upgrade) inserts read_only only: its token
-- gets the scopes it asked for under the old meaning.
create function wafleet_admin_token_scopes_from_read_only() returns trigger
language plpgsql set search_path = public, pg_temp as $$
begin
    if new.scopes is null then
        new.scopes := case when new.read_only then array['read']
                           else array['read', 'credentials', 'pii', 'write', 'admin'] end;
    end if;
    return new;
end
$$;
create trigger admin_tokens_scopes_default before insert on admin_tokens
    for each row execute function wafleet_admin_token_scopes_from_read_only();
