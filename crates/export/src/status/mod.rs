//! `ExportService`: how far each table is, read from PostgreSQL only (it
//! answers even when BigQuery is unreachable, which is when it is needed).

pub mod api;
pub mod store;
