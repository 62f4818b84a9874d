//! Reading an INVALID_ARGUMENT's `Violations` detail in tests.

/// The one violation an INVALID_ARGUMENT status carries, as (field, rule);
/// fails the test when the code is another, or the detail has not exactly one
/// violation with a rule.
pub fn only_violation(status: &tonic::Status) -> (String, String) {
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let violations = tally_runtime::error::status_violations(status);
    assert_eq!(violations.len(), 1, "{status:?}");
    assert!(!violations[0].rule.is_empty(), "{status:?}");
    (violations[0].field.clone(), violations[0].rule.clone())
}
