//! The chains: one per service schema, plus `tally_auth` for API keys.

/// A schema that holds an audit chain (`<schema>.audit_log`,
/// `<schema>.audit_chain_head`). A closed set, so no caller's text ever
/// reaches SQL as an identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Schema {
    /// `tally_auth`: API key creation and revocation (chain `auth`).
    Auth,
    /// `ingest`.
    Ingest,
    /// `rating`.
    Rating,
    /// `invoicing`.
    Invoicing,
    /// `payments`.
    Payments,
    /// `finance`: period closes and ledger rebuilds.
    Finance,
    /// `connectors`: billing system of record changes (`billing_system.*`).
    Connectors,
}

impl Schema {
    /// Every chain, in the order answers list them.
    pub const ALL: [Schema; 7] = [
        Schema::Auth,
        Schema::Ingest,
        Schema::Rating,
        Schema::Invoicing,
        Schema::Payments,
        Schema::Finance,
        Schema::Connectors,
    ];

    /// The PostgreSQL schema.
    pub fn sql_name(self) -> &'static str {
        match self {
            Schema::Auth => "tally_auth",
            Schema::Ingest => "ingest",
            Schema::Rating => "rating",
            Schema::Invoicing => "invoicing",
            Schema::Payments => "payments",
            Schema::Finance => "finance",
            Schema::Connectors => "connectors",
        }
    }

    /// The chain's name on the wire and the command line (`auth`, `invoicing`, …).
    pub fn chain_name(self) -> &'static str {
        match self {
            Schema::Auth => "auth",
            other => other.sql_name(),
        }
    }

    /// Parses a chain name (`tally_auth` is accepted for `auth`).
    pub fn from_chain_name(name: &str) -> Option<Schema> {
        Schema::ALL
            .into_iter()
            .find(|schema| schema.chain_name() == name || schema.sql_name() == name)
    }

    /// `<schema>.audit_log`.
    pub(crate) fn log_table(self) -> String {
        format!("{}.audit_log", self.sql_name())
    }

    /// `<schema>.audit_chain_head`.
    pub(crate) fn head_table(self) -> String {
        format!("{}.audit_chain_head", self.sql_name())
    }
}

impl std::fmt::Display for Schema {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.chain_name())
    }
}
