//! Page tokens: `<listing>.<last id>`; ids sort by creation (UUIDv7 from the
//! service clock), so every listing pages by id.

use crate::error::{InvoicingError, Result};

/// The page size to use: default 50, at most 1000 (larger values clamp).
pub fn page_size(requested: i32) -> i64 {
    match requested {
        value if value <= 0 => 50,
        value => i64::from(value.min(1000)),
    }
}

/// The id after which the page starts, `None` for the first page.
pub fn after(token: &str, listing: &str) -> Result<Option<String>> {
    if token.is_empty() {
        return Ok(None);
    }
    match token
        .strip_prefix(listing)
        .and_then(|rest| rest.strip_prefix('.'))
    {
        Some(id) if !id.is_empty() => Ok(Some(id.to_owned())),
        _ => Err(InvoicingError::invalid(
            "page_token",
            "is not a token of this listing",
        )),
    }
}

/// Cuts the extra row fetched beyond `limit` and returns the next token.
pub fn finish<T>(
    mut rows: Vec<T>,
    limit: i64,
    listing: &str,
    id: impl Fn(&T) -> &str,
) -> (Vec<T>, String) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() <= limit {
        return (rows, String::new());
    }
    rows.truncate(limit);
    let token = rows
        .last()
        .map(|row| format!("{listing}.{}", id(row)))
        .unwrap_or_default();
    (rows, token)
}
