//! Tests of the posting rules.
