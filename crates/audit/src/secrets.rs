//! The last guard against a secret in the append-only log.
//!
//! Entries are built from each service's own snapshots, which never hold
//! secrets; this check refuses an entry anyway when a field holds something
//! shaped like one, because nothing written to the log can be removed.
//! Card data never reaches Tally (Stripe holds it), so it is not looked for.

/// Prefixes of Stripe secrets: secret and restricted keys, webhook secrets.
const STRIPE_SECRET_PREFIXES: &[&str] = &["sk_live_", "sk_test_", "rk_live_", "rk_test_", "whsec_"];

/// The first of `fields` (name, text) that holds a secret, if any.
pub(crate) fn field_with_secret<'a>(
    fields: impl IntoIterator<Item = (&'static str, Option<&'a str>)>,
) -> Option<&'static str> {
    fields
        .into_iter()
        .find(|(_, value)| value.is_some_and(looks_secret))
        .map(|(field, _)| field)
}

/// Whether `text` contains a Tally API key (`tally_` + 64 hex) or a Stripe secret.
pub fn looks_secret(text: &str) -> bool {
    if STRIPE_SECRET_PREFIXES
        .iter()
        .any(|prefix| text.contains(prefix))
    {
        return true;
    }
    text.match_indices("tally_").any(|(start, _)| {
        let rest = &text[start + "tally_".len()..];
        rest.len() >= 64 && rest.as_bytes()[..64].iter().all(u8::is_ascii_hexdigit)
    })
}

#[cfg(test)]
mod tests {
    use super::looks_secret;

    #[test]
    fn keys_and_stripe_secrets_are_recognised() {
        let key = format!("tally_{}", "ab12".repeat(16));
        for secret in [
            key.as_str(),
            "sk_test_51Habc",
            "rk_live_x",
            "whsec_abc",
            "{\"note\":\"tally_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"}",
        ] {
            assert!(looks_secret(secret), "{secret}");
        }
        for harmless in ["tally_auth", "key_0192f0c1", "inv_abc", "pi_123", "ch_1"] {
            assert!(!looks_secret(harmless), "{harmless}");
        }
    }
}
