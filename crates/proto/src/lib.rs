//! Tally's contracts, generated from `proto/`: the gRPC services of ingest,
//! rating, invoicing and payments, the clock service every service serves in
//! dev and test, and the messages that travel on the bus.
//!
//! The modules mirror the protobuf packages (`tally.ingest.v1` is
//! [`tally::ingest::v1`]); the short re-exports ([`ingest`], [`events`], …)
//! are what the rest of the workspace uses. Mapping between these wire types
//! and the domain types happens at each service's edge, through [`convert`]
//! for the shared `tally.common.v1` values (decimals, money, timestamps).

pub mod convert;

/// The generated protobuf packages, one module per package.
#[allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]
pub mod tally {
    /// `tally.common.*`.
    pub mod common {
        /// `tally.common.v1`: money, decimals, time ranges, violations.
        pub mod v1 {
            tonic::include_proto!("tally.common.v1");
        }
    }
    /// `tally.events.*`.
    pub mod events {
        /// `tally.events.v1`: the bus messages.
        pub mod v1 {
            tonic::include_proto!("tally.events.v1");
        }
    }
    /// `tally.ingest.*`.
    pub mod ingest {
        /// `tally.ingest.v1`: `IngestService`.
        pub mod v1 {
            tonic::include_proto!("tally.ingest.v1");
        }
    }
    /// `tally.rating.*`.
    pub mod rating {
        /// `tally.rating.v1`: `CatalogService`, `RatingService`.
        pub mod v1 {
            tonic::include_proto!("tally.rating.v1");
        }
    }
    /// `tally.invoicing.*`.
    pub mod invoicing {
        /// `tally.invoicing.v1`: `CustomerService`, `SubscriptionService`,
        /// `InvoiceService`, `CreditService`.
        pub mod v1 {
            tonic::include_proto!("tally.invoicing.v1");
        }
    }
    /// `tally.payments.*`.
    pub mod payments {
        /// `tally.payments.v1`: `PaymentService`, `ReconciliationService`.
        pub mod v1 {
            tonic::include_proto!("tally.payments.v1");
        }
    }
    /// `tally.finance.*`.
    pub mod finance {
        /// `tally.finance.v1`: `LedgerService`, `AnalyticsService`.
        pub mod v1 {
            tonic::include_proto!("tally.finance.v1");
        }
    }
    /// `tally.connectors.*`.
    pub mod connectors {
        /// `tally.connectors.v1`: `ConnectorService` (Orb usage forwarding).
        pub mod v1 {
            tonic::include_proto!("tally.connectors.v1");
        }
    }
    /// `tally.export.*`.
    pub mod export {
        /// `tally.export.v1`: `ExportService` (the BigQuery export's status).
        pub mod v1 {
            tonic::include_proto!("tally.export.v1");
        }
    }
    /// `tally.clock.*`.
    pub mod clock {
        /// `tally.clock.v1`: `ClockService`.
        pub mod v1 {
            tonic::include_proto!("tally.clock.v1");
        }
    }
    /// `tally.auth.*`.
    pub mod auth {
        /// `tally.auth.v1`: `AuthService`, the calling key's scopes.
        pub mod v1 {
            tonic::include_proto!("tally.auth.v1");
        }
    }
    /// `tally.audit.*`.
    pub mod audit {
        /// `tally.audit.v1`: `AuditService`, every service's audit chain.
        pub mod v1 {
            tonic::include_proto!("tally.audit.v1");
        }
    }
}

pub use tally::audit::v1 as audit;
pub use tally::auth::v1 as auth;
pub use tally::clock::v1 as clock;
pub use tally::common::v1 as common;
pub use tally::connectors::v1 as connectors;
pub use tally::events::v1 as events;
pub use tally::export::v1 as export;
pub use tally::finance::v1 as finance;
pub use tally::ingest::v1 as ingest;
pub use tally::invoicing::v1 as invoicing;
pub use tally::payments::v1 as payments;
pub use tally::rating::v1 as rating;

/// The encoded `FileDescriptorSet` of every Tally contract, for
/// `tonic-reflection` (`register_encoded_file_descriptor_set`).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tally_descriptor.bin"));

/// Full protobuf names of every gRPC service defined in `proto/`.
pub const SERVICE_NAMES: &[&str] = &[
    "tally.ingest.v1.IngestService",
    "tally.rating.v1.CatalogService",
    "tally.rating.v1.RatingService",
    "tally.invoicing.v1.CustomerService",
    "tally.invoicing.v1.SubscriptionService",
    "tally.invoicing.v1.InvoiceService",
    "tally.invoicing.v1.CreditService",
    "tally.invoicing.v1.QuoteService",
    "tally.payments.v1.PaymentService",
    "tally.payments.v1.ReconciliationService",
    "tally.clock.v1.ClockService",
    "tally.finance.v1.LedgerService",
    "tally.finance.v1.AnalyticsService",
    "tally.audit.v1.AuditService",
    "tally.connectors.v1.ConnectorService",
    "tally.connectors.v1.MigrationService",
    "tally.export.v1.ExportService",
    "tally.auth.v1.AuthService",
];
