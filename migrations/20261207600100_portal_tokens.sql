-- Customer portal tokens (`tally portal link`): API-key rows limited to one
-- customer and a lifetime. Such a row has scope `read` only, and the services
-- admit it only on the portal's calls, for its customer (runtime::auth).
ALTER TABLE tally_auth.api_keys
    ADD COLUMN customer_id text,
    ADD COLUMN expires_at  timestamptz,
    ADD CONSTRAINT api_keys_portal_tokens_read_and_expire CHECK (
        customer_id IS NULL OR (scopes = ARRAY['read'] AND expires_at IS NOT NULL)
    );
