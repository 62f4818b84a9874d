//! The catalog: meters, plans and plan versions (`tally.rating.v1.CatalogService`).
//!
//! * [`api`] — the gRPC service: request checks and transactions;
//! * `audit` — the entry each change records in rating's audit chain;
//! * `changes` — changes validated before they are made (the dry run of a
//!   catalog apply) and unpublished drafts and plans deleted;
//! * [`mapping`] — wire ↔ domain, reporting every violation with its field path;
//! * [`store`] — SQL on the `rating` schema, including the loaders the rest of
//!   rating prices with ([`store::published_version`], [`store::meter`],
//!   [`store::meters`]).
//!
//! Drafts are stored as the caller wrote them (protobuf); publishing validates
//! the draft through the domain crate and stores the domain `Plan` beside it,
//! after which the database refuses any change (see docs/architecture.md,
//! "Rating: catalog").

pub mod api;
mod audit;
mod changes;
mod error;
pub mod mapping;
mod paging;
pub mod store;

pub use api::CatalogApi;
pub use error::CatalogError;
/// Kept where the catalog's clients and tests found it; the reader is the runtime's.
pub use tally_runtime::error::status_violations;
