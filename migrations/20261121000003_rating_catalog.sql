-- Rating: the catalog. Meters, plans, and plan versions (drafts and immutable
-- published versions). See docs/architecture.md, "Rating: catalog".
--
-- * A meter's definition is `spec`, the serde JSON of the domain `MeterSpec`
--   (validated by `Meter::new` before it is written, and again when read).
--   Meters are immutable: published plans and invoices name them.
-- * A plan version keeps two encodings of its content:
--   `content` — the `tally.rating.v1.PlanVersionSpec` as the caller wrote it,
--   protobuf-encoded. Drafts may be incomplete or invalid, so this is the only
--   form a draft can have; it is also what GetPlanVersion returns.
--   `spec` — the serde JSON of the validated domain `Plan` (a `PlanSpec`),
--   written once, on publish, by the same transaction that flips the status.
--   Pricing reads only this column (`catalog::store::published_version`).
-- * A published (or archived) version is immutable: the trigger below refuses
--   any change to its content, spec, identity or publication, and any delete.
--   The only change allowed is published → archived.
-- * Idempotency: meters and plans are idempotent by their `code` (the key the
--   contract names); `request_hash` (SHA-256 of the canonical definition) tells
--   a replay from a different request. Plan versions carry the caller's
--   `idempotency_key` and the hash of the request.

CREATE TABLE rating.meters (
    code          text COLLATE "C" PRIMARY KEY,
    id            text COLLATE "C" NOT NULL UNIQUE CHECK (id LIKE 'mtr\_%'),
    name          text NOT NULL,
    description   text NOT NULL DEFAULT '',
    unit          text NOT NULL DEFAULT '',
    spec          jsonb NOT NULL CHECK (spec ->> 'code' = code),
    request_hash  bytea NOT NULL,
    created_at    timestamptz NOT NULL
);

CREATE TABLE rating.plans (
    id            text COLLATE "C" PRIMARY KEY CHECK (id LIKE 'plan\_%'),
    code          text COLLATE "C" NOT NULL UNIQUE,
    name          text NOT NULL CHECK (btrim(name) <> ''),
    description   text NOT NULL DEFAULT '',
    metadata      jsonb NOT NULL DEFAULT '{}'::jsonb,
    request_hash  bytea NOT NULL,
    created_at    timestamptz NOT NULL
);

CREATE TABLE rating.plan_versions (
    id               text COLLATE "C" PRIMARY KEY CHECK (id LIKE 'pv\_%'),
    plan_id          text COLLATE "C" NOT NULL REFERENCES rating.plans (id),
    version          integer NOT NULL CHECK (version >= 1),
    -- 'archived' is in the contract (PlanVersionStatus) though no RPC sets it yet.
    status           text NOT NULL CHECK (status IN ('draft', 'published', 'archived')),
    content          bytea NOT NULL,
    spec             jsonb,
    revision         bigint NOT NULL DEFAULT 1 CHECK (revision >= 1),
    idempotency_key  text NOT NULL UNIQUE,
    request_hash     bytea NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    published_at     timestamptz,
    UNIQUE (plan_id, version),
    -- A draft has no domain spec yet; anything published has one, and its date.
    CHECK ((status = 'draft') = (spec IS NULL)),
    CHECK ((status = 'draft') = (published_at IS NULL))
);
-- `Plan.latest_published_version_id` and ListPlanVersions by status.
CREATE INDEX plan_versions_by_status ON rating.plan_versions (plan_id, status, version DESC);

-- Published versions are immutable in the database too, not only in Rust: a
-- bug, a migration or an operator's UPDATE cannot reprice past invoices.
CREATE FUNCTION rating.refuse_published_version_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'draft' THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'plan version % is %: it cannot be deleted', OLD.id, OLD.status
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF NEW.id IS DISTINCT FROM OLD.id
        OR NEW.plan_id IS DISTINCT FROM OLD.plan_id
        OR NEW.version IS DISTINCT FROM OLD.version
        OR NEW.content IS DISTINCT FROM OLD.content
        OR NEW.spec IS DISTINCT FROM OLD.spec
        OR NEW.revision IS DISTINCT FROM OLD.revision
        OR NEW.published_at IS DISTINCT FROM OLD.published_at
        OR NOT (NEW.status = OLD.status OR (OLD.status = 'published' AND NEW.status = 'archived'))
    THEN
        RAISE EXCEPTION 'plan version % is %: published versions are immutable', OLD.id, OLD.status
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER plan_versions_immutable
    BEFORE UPDATE OR DELETE ON rating.plan_versions
    FOR EACH ROW EXECUTE FUNCTION rating.refuse_published_version_change();

-- Meters never change once created (their code is what events and plans name).
CREATE FUNCTION rating.refuse_meter_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'meter % is immutable', OLD.code USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER meters_immutable
    BEFORE UPDATE OR DELETE ON rating.meters
    FOR EACH ROW EXECUTE FUNCTION rating.refuse_meter_change();
