-- '.' and '..' are normalised out of URL paths by HTTP clients and proxies, so a webhook URL for
-- such a ref could never work; the parser refuses them and so does the table.
alter table tenants add constraint tenants_customer_ref_not_dot_segment check (customer_ref not in ('.', '..'));
