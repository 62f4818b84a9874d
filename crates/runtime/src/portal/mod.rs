//! Customer portal tokens (`tally portal link`).
//!
//! A token is a row of `tally_auth.api_keys` with a `customer_id` and an
//! `expires_at`: `tallyp_<customer id>.<secret>`, scope `read`, only its
//! SHA-256 stored. The auth layer ([`crate::auth`]) admits it on
//! [`PORTAL_METHODS`] only (anything else is `PERMISSION_DENIED`), refuses it
//! after its expiry (wall time, whatever clock the services run on:
//! `UNAUTHENTICATED`), and puts its [`CustomerScope`] in the request's
//! extensions; the services answering those methods refuse any other
//! customer with `PERMISSION_DENIED` ([`ensure_customer`]).

mod store;

pub use store::create_token;

/// The calls a customer portal token may make: reading its customer, its
/// subscriptions, live cost, usage per meter (the portal's chart), invoices
/// (past and upcoming) and credit balance.
/// Each of these checks the customer named in the request, or the customer
/// of what it read, against the token's ([`ensure_customer`]).
pub const PORTAL_METHODS: &[&str] = &[
    "/tally.invoicing.v1.CustomerService/GetCustomer",
    "/tally.invoicing.v1.SubscriptionService/ListSubscriptions",
    "/tally.invoicing.v1.InvoiceService/ListInvoices",
    "/tally.invoicing.v1.InvoiceService/GetInvoice",
    "/tally.invoicing.v1.InvoiceService/PreviewUpcomingInvoice",
    "/tally.invoicing.v1.CreditService/GetCreditBalance",
    "/tally.rating.v1.RatingService/GetCurrentCost",
    "/tally.rating.v1.RatingService/GetUsage",
];

/// The one customer a portal token may read, and until when. In the
/// request's extensions of every call made with such a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerScope {
    /// The `cus_…` id.
    pub customer_id: String,
    /// When the token stops working (wall time).
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// Refuses (`PERMISSION_DENIED`) a call made with a portal token for another
/// customer than the token's; any other caller passes. `customer_id` is the
/// customer the request names, or the customer of what the call read.
pub fn ensure_customer(
    extensions: &http::Extensions,
    customer_id: &str,
) -> Result<(), tonic::Status> {
    match extensions.get::<CustomerScope>() {
        Some(scope) if scope.customer_id != customer_id => {
            Err(tonic::Status::permission_denied(format!(
                "this portal token may read customer {} only, not {}",
                scope.customer_id,
                if customer_id.is_empty() {
                    "every customer (name customer_id)"
                } else {
                    customer_id
                }
            )))
        }
        _ => Ok(()),
    }
}

/// A fresh portal token for `customer_id`: `tallyp_<customer id>.` and 64 hex
/// characters (the customer is readable so the portal page knows whom to
/// show; the secret is what authenticates).
pub fn generate_token(customer_id: &str) -> String {
    format!(
        "tallyp_{customer_id}.{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{ApiKey, ApiKeyRegistry, AuthError, Scope, hash_key};

    #[test]
    fn portal_tokens_read_their_customer_only_until_they_expire() {
        let registry = ApiKeyRegistry::default();
        let token = generate_token("cus_1");
        assert!(token.starts_with("tallyp_cus_1."), "{token}");
        let scope = CustomerScope {
            customer_id: "cus_1".into(),
            expires_at: chrono::Utc::now() + chrono::Duration::hours(1),
        };
        let key = ApiKey {
            id: "key_p".into(),
            name: "portal cus_1".into(),
            scopes: [Scope::Read].into_iter().collect(),
        };
        registry.insert_portal_token(hash_key(&token), key.clone(), scope.clone());
        let (_, limited) = registry
            .authorize_call(
                Some(&token),
                "/tally.invoicing.v1.InvoiceService/ListInvoices",
            )
            .unwrap();
        assert_eq!(limited.as_ref(), Some(&scope));
        // A read outside the portal's calls, and any write, are refused.
        for method in [
            "/tally.invoicing.v1.CustomerService/ListCustomers",
            "/tally.invoicing.v1.InvoiceService/VoidInvoice",
            "/tally.ingest.v1.IngestService/ListRejectedEvents",
        ] {
            let error = registry.authorize_call(Some(&token), method).unwrap_err();
            assert_eq!(
                tonic::Status::from(error).code(),
                tonic::Code::PermissionDenied,
                "{method}"
            );
        }
        let mut extensions = http::Extensions::new();
        assert!(
            ensure_customer(&extensions, "cus_2").is_ok(),
            "no token, no limit"
        );
        extensions.insert(scope);
        assert!(ensure_customer(&extensions, "cus_1").is_ok());
        for other in ["cus_2", ""] {
            assert_eq!(
                ensure_customer(&extensions, other).unwrap_err().code(),
                tonic::Code::PermissionDenied
            );
        }
        let expired = CustomerScope {
            customer_id: "cus_1".into(),
            expires_at: chrono::Utc::now() - chrono::Duration::seconds(1),
        };
        registry.insert_portal_token(hash_key(&token), key, expired);
        let error = registry
            .authorize_call(
                Some(&token),
                "/tally.invoicing.v1.InvoiceService/GetInvoice",
            )
            .unwrap_err();
        assert!(matches!(error, AuthError::Expired(_)), "{error}");
        assert_eq!(
            tonic::Status::from(error).code(),
            tonic::Code::Unauthenticated
        );
    }
}
