//! Pagination of the catalog's listings (common.proto: `page_size` default 50,
//! at most 1000; an empty `next_page_token` ends the listing).
//!
//! Page tokens name the listing they belong to (`meters:<code>`,
//! `plans:<code>`, `versions:<plan id>:<version>`), so a token from another
//! listing is refused as INVALID_ARGUMENT instead of being silently misread.

use super::error::CatalogError;
use super::mapping::{Rule, Violations};

/// Default and largest page sizes (common.proto).
const DEFAULT_PAGE_SIZE: i64 = 50;
const MAX_PAGE_SIZE: i64 = 1000;

/// The page size to use when `requested` was asked for (0 or less: the default).
pub fn page_size(requested: i32) -> i64 {
    match requested {
        size if size <= 0 => DEFAULT_PAGE_SIZE,
        size => i64::from(size).min(MAX_PAGE_SIZE),
    }
}

/// The position after which a listing resumes, from its token.
pub fn page_after(token: &str, listing: &str) -> Result<Option<String>, CatalogError> {
    if token.is_empty() {
        return Ok(None);
    }
    match token.split_once(':') {
        Some((kind, after)) if kind == listing && !after.is_empty() => Ok(Some(after.to_owned())),
        _ => Err(invalid_token(format!(
            "page_token {token:?} was not issued for this listing"
        ))),
    }
}

fn invalid_token(description: String) -> CatalogError {
    let mut violations = Violations::default();
    violations.add("page_token", Rule::InvalidPageToken, description);
    CatalogError::Invalid(violations)
}

/// Splits a fetched page of `limit + 1` rows into the page and the next token.
pub fn paginate<T>(mut rows: Vec<T>, limit: i64, token: impl Fn(&T) -> String) -> (Vec<T>, String) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() <= limit {
        return (rows, String::new());
    }
    rows.truncate(limit);
    let next = rows.last().map(token).unwrap_or_default();
    (rows, next)
}

/// One page of a listing ordered by code (`meters`, `plans`): reads one row
/// more than the page to know whether a next page exists.
pub async fn page_by_code<Row>(
    page_token: &str,
    page_size: i32,
    listing: &str,
    fetch: impl AsyncFnOnce(Option<&str>, i64) -> Result<Vec<Row>, sqlx::Error>,
    code: impl Fn(&Row) -> String,
) -> Result<(Vec<Row>, String), CatalogError> {
    let after = page_after(page_token, listing)?;
    let limit = self::page_size(page_size);
    let rows = fetch(after.as_deref(), limit + 1).await?;
    Ok(paginate(rows, limit, |row| {
        format!("{listing}:{}", code(row))
    }))
}

/// The version number in a `versions:<plan id>:<version>` token, which must be `plan_id`'s.
pub fn version_token(after: &str, plan_id: &str) -> Result<i32, CatalogError> {
    after
        .split_once(':')
        .filter(|(token_plan, _)| *token_plan == plan_id)
        .and_then(|(_, version)| version.parse().ok())
        .ok_or_else(|| {
            invalid_token(format!(
                "page_token does not continue plan {plan_id}'s versions"
            ))
        })
}
